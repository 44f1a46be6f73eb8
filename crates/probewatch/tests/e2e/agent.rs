//! `probewatch agent` against real servers: every file delivered once through resends, a
//! proxy that cuts connections, a server that is away; bad files quarantined on the agent
//! and reported centrally; tokens; and the push API.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::util::*;

const TOKEN: &str = "agent-token-0123456789abcdef";

/// A running `probewatch agent`; killed when dropped.
struct Agent {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Agent {
    fn start(config: &Path) -> Agent {
        let mut child = Command::new(BIN)
            .args(["agent", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn agent");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let out = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    out.lock().expect("lock").push_str(&format!("{line}\n"));
                }
            });
        }
        let agent = Agent { child, output };
        agent.wait_log("agent started", "started", Duration::from_secs(30));
        agent
    }

    fn log(&self) -> String {
        self.output.lock().expect("lock").clone()
    }

    fn wait_log(&self, what: &str, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}; agent log:\n{}", self.log());
    }

    /// SIGTERM and a clean exit.
    fn stop(mut self) -> String {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let exit = self.child.wait().expect("wait");
        std::thread::sleep(Duration::from_millis(100));
        assert!(exit.success(), "agent exit {exit}:\n{}", self.log());
        self.log()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server on `port` (0: any) taking results from agent `web-1` (which may also write
/// for host `h1`), with its own empty spool.
fn server_config(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("server-spool")).expect("spool");
    let path = dir.join("server.toml");
    std::fs::write(
        &path,
        format!(
            r#"
agent_offline_after = "2s"

[[spool]]
path = "{spool}"

[[agent]]
name = "web-1"
token = "{TOKEN}"
hosts = ["h1"]

[[agent]]
name = "ci"
token = "push-token-0123456789abcdef"
"#,
            spool = dir.join("server-spool").display()
        ),
    )
    .expect("write server config");
    path
}

fn start_server(dir: &Path, port: u16) -> Daemon {
    Daemon::run_config(
        &server_config(dir),
        &dir.join("server-data"),
        &format!("127.0.0.1:{port}"),
        None,
    )
}

/// An agent config delivering `spool` to `servers`; files are deleted once stored and
/// rejected ones moved to `quarantine`.
fn agent_config(dir: &Path, servers: &[String], token: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("agent-spool")).expect("spool");
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            r#"
server = {servers:?}
name = "web-1"
token = "{token}"
data_dir = "{data}"
heartbeat_interval = "500ms"
request_timeout = "5s"
settle = "200ms"

[[spool]]
path = "{spool}"
after_ingest = "delete"
quarantine = "{quarantine}"
labels = {{ site = "eu1" }}
"#,
            data = dir.join("agent-data").display(),
            spool = dir.join("agent-spool").display(),
            quarantine = dir.join("quarantine").display(),
        ),
    )
    .expect("write agent config");
    path
}

fn spool_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

#[test]
fn an_agent_delivers_every_file_once_and_deletes_it_only_after_the_server_stored_it() {
    let env = Env::new();
    let dir = env.dir.path();
    let server = start_server(dir, 0);
    let config = agent_config(dir, std::slice::from_ref(&server.base), TOKEN);
    let metrics_port = free_port();
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:{metrics_port}\"\n{text}"),
    )
    .expect("config");
    let spool = dir.join("agent-spool");
    // A backlog before the agent starts, then files while it runs.
    for n in 0..150u64 {
        std::fs::write(spool.join(format!("a{n:04}.xml")), result_xml(n)).expect("write");
    }
    let agent = Agent::start(&config);
    for n in 150..250u64 {
        write_renamed(&spool.join(format!("b{n:04}.xml")), &result_xml(n));
    }
    server.wait_files(250, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !spool_is_empty(&spool) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        spool_is_empty(&spool),
        "every file deleted after delivery:\n{}",
        agent.log()
    );
    let (files, paths, samples) = crate::exactly_once::ledger_of(env_store(dir).as_ref());
    assert_eq!((files, paths, samples), (250, 250, 250 * SAMPLES_PER_FILE));
    // The results carry the spool's labels and the host they name; the ledger names the
    // agent.
    let up = server
        .get("/api/v1/query?query=count(online_users{site=\"eu1\",host=\"h1\"})&time=1700000249");
    assert_eq!(up["data"]["result"][0]["value"][1], "7", "{up}");
    let listed = server.get("/api/v1/files?status=ingested&limit=1");
    assert!(
        listed.to_string().contains("web-1:"),
        "the ledger path names the agent: {listed}"
    );
    // The server knows the agent and PromQL sees its series.
    server.wait_until("the agent's backlog series", Duration::from_secs(30), |d| {
        d.get("/api/v1/query?query=probewatch_agent_backlog_files{agent=\"web-1\"}")["data"]
            ["result"][0]["value"][1]
            == "0"
    });
    let agents = server.get("/api/v1/agents");
    assert_eq!(agents["data"][0]["name"], "web-1", "{agents}");
    assert!(
        agents["data"][0]["stored"].as_u64().unwrap_or(0) >= 250,
        "{agents}"
    );
    assert_eq!(agents["data"][0]["version"], env!("CARGO_PKG_VERSION"));
    // The agent's own metrics say the same.
    let metrics = reqwest::blocking::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .and_then(|r| r.text())
        .expect("agent metrics");
    let value = |line: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(line))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(-1.0)
    };
    assert_eq!(
        value("probewatch_agent_files_queued_total "),
        250.0,
        "{metrics}"
    );
    assert_eq!(
        value("probewatch_agent_files_delivered_total{result=\"stored\"}")
            + value("probewatch_agent_files_delivered_total{result=\"duplicate\"}"),
        250.0,
        "{metrics}"
    );
    assert_eq!(value("probewatch_agent_outbox_files "), 0.0, "{metrics}");
    agent.stop();
    server.stop();
}

fn env_store(dir: &Path) -> Arc<dyn probewatch_store::Store> {
    probewatch_store::open_store(
        &probewatch_store::StoreLocation::Sqlite(dir.join("server-data")),
        &probewatch_store::StoreOptions::default(),
    )
    .expect("open the store")
}

/// A batch as the agent protocol carries it, of `n` files from result_xml.
fn batch(range: std::ops::Range<u64>) -> Value {
    let items: Vec<Value> = range
        .map(|n| {
            json!({
                "spool": "default",
                "format": "xml",
                "path": format!("/var/spool/probewatch/r{n}.xml"),
                "size": result_xml(n).len(),
                "mtime_ns": 1_700_000_000_000_000_000i64 + n as i64,
                "inode": n,
                "content": base64::engine::general_purpose::STANDARD.encode(result_xml(n)),
            })
        })
        .collect();
    json!({ "protocol": 1, "agent": "web-1", "agent_version": "test", "items": items })
}

fn post(base: &str, path: &str, token: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::blocking::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(body)
        .send()
        .expect("post");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

#[test]
fn a_batch_sent_three_times_is_stored_once_and_tokens_are_checked() {
    let env = Env::new();
    let dir = env.dir.path();
    let server = start_server(dir, 0);
    let body = batch(0..40);
    let (status, first) = post(&server.base, "/api/v1/agent/ingest", TOKEN, &body);
    assert_eq!(status, 200, "{first}");
    assert!(
        first["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|i| i["result"] == "stored")
    );
    // Twice more, concurrently: every item a duplicate.
    let resends: Vec<_> = (0..2)
        .map(|_| {
            let (base, body) = (server.base.clone(), body.clone());
            std::thread::spawn(move || post(&base, "/api/v1/agent/ingest", TOKEN, &body))
        })
        .collect();
    for resend in resends {
        let (status, answer) = resend.join().expect("join");
        assert_eq!(status, 200, "{answer}");
        assert!(
            answer["items"]
                .as_array()
                .expect("items")
                .iter()
                .all(|i| i["result"] == "duplicate"),
            "{answer}"
        );
    }
    let (files, paths, samples) = crate::exactly_once::ledger_of(env_store(dir).as_ref());
    assert_eq!((files, paths, samples), (40, 40, 40 * SAMPLES_PER_FILE));

    // A wrong token, no token, another agent's name, another protocol: refused whole.
    let (status, answer) = post(
        &server.base,
        "/api/v1/agent/ingest",
        "wrong-token-xxxxxxxxxxxx",
        &body,
    );
    assert_eq!(status, 401, "{answer}");
    let no_token = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/agent/ingest", server.base))
        .json(&body)
        .send()
        .expect("post");
    assert_eq!(no_token.status().as_u16(), 401);
    let mut other = body.clone();
    other["agent"] = json!("db-1");
    let (status, answer) = post(&server.base, "/api/v1/agent/ingest", TOKEN, &other);
    assert_eq!(status, 403, "{answer}");
    let mut newer = body.clone();
    newer["protocol"] = json!(99);
    let (status, answer) = post(&server.base, "/api/v1/agent/ingest", TOKEN, &newer);
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or("")
            .contains("protocol 99"),
        "{answer}"
    );
    let (status, answer) = post(
        &server.base,
        "/api/v1/agent/ingest",
        TOKEN,
        &json!({"protocol": 1}),
    );
    assert_eq!(status, 400, "malformed batch: {answer}");

    // A reload takes a new agent's token at once and drops a removed one.
    let config = dir.join("server.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replace("name = \"ci\"", "name = \"web-2\"").replace(
        "push-token-0123456789abcdef",
        "web-2-token-0123456789abcdef",
    );
    std::fs::write(&config, text).expect("config");
    server.sighup();
    server.wait_until("the reload", Duration::from_secs(10), |d| {
        d.log().contains("configuration reloaded")
    });
    let mut from_web2 = batch(100..101);
    from_web2["agent"] = json!("web-2");
    let (status, answer) = post(
        &server.base,
        "/api/v1/agent/ingest",
        "web-2-token-0123456789abcdef",
        &from_web2,
    );
    assert_eq!(status, 200, "{answer}");
    let (status, _) = post(
        &server.base,
        "/api/v1/push",
        "push-token-0123456789abcdef",
        &json!({}),
    );
    assert_eq!(status, 401, "the removed token is refused");
    server.stop();
}

#[test]
fn bad_files_are_quarantined_on_the_agent_reported_centrally_and_the_rest_flows() {
    let env = Env::new();
    let dir = env.dir.path();
    let server = start_server(dir, 0);
    let config = agent_config(dir, std::slice::from_ref(&server.base), TOKEN);
    let spool = dir.join("agent-spool");
    std::fs::write(spool.join("broken.xml"), "<probe name=\"x\"><check").expect("write");
    std::fs::write(
        spool.join("foreign.xml"),
        r#"<probe name="db" host="db-9" time="1700000000"><check name="c" status="ok"/></probe>"#,
    )
    .expect("write");
    std::fs::write(
        spool.join("nohost.xml"),
        r#"<probe name="mine" time="1700000000"><check name="c" status="ok"/></probe>"#,
    )
    .expect("write");
    for n in 0..20u64 {
        std::fs::write(spool.join(format!("good{n}.xml")), result_xml(n)).expect("write");
    }
    let agent = Agent::start(&config);
    server.wait_files(23, Duration::from_secs(60));
    let quarantine = dir.join("quarantine");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(quarantine.join("broken.xml").exists() && quarantine.join("foreign.xml").exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(quarantine.join("broken.xml").exists(), "{}", agent.log());
    assert!(quarantine.join("foreign.xml").exists(), "{}", agent.log());
    let log = agent.log();
    assert!(
        log.contains("rejected") && log.contains("broken.xml"),
        "{log}"
    );
    assert!(log.contains("db-9"), "the agent says why: {log}");
    let rejected = server.get("/api/v1/files?status=rejected");
    let text = rejected.to_string();
    assert!(
        text.contains("web-1:") && text.contains("broken.xml"),
        "{text}"
    );
    assert!(text.contains("forbidden"), "{text}");
    // A result naming no host takes the agent's name.
    let mine = server.get("/api/v1/query?query=probe_check_status{probe=\"mine\"}&time=1700000000");
    assert_eq!(
        mine["data"]["result"][0]["metric"]["host"], "web-1",
        "{mine}"
    );
    assert_eq!(server.stats()["files_ingested"], 21);
    agent.stop();
    server.stop();
}

#[test]
fn the_agent_keeps_files_while_the_server_is_away_and_drains_when_it_returns() {
    let env = Env::new();
    let dir = env.dir.path();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = agent_config(dir, std::slice::from_ref(&base), TOKEN);
    let spool = dir.join("agent-spool");
    let agent = Agent::start(&config);
    for n in 0..100u64 {
        write_renamed(&spool.join(format!("f{n:04}.xml")), &result_xml(n));
    }
    agent.wait_log(
        "a failed delivery",
        "cannot deliver",
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_secs(1));
    let left = std::fs::read_dir(&spool).expect("spool").count();
    assert_eq!(
        left, 100,
        "nothing leaves the spool before a server stored it"
    );
    // Restarted over a non-empty outbox, the agent keeps what it had queued.
    agent.stop();
    let agent = Agent::start(&config);
    let server = start_server(dir, port);
    server.wait_files(100, Duration::from_secs(90));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !spool_is_empty(&spool) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(spool_is_empty(&spool), "{}", agent.log());
    let (files, paths, samples) = crate::exactly_once::ledger_of(env_store(dir).as_ref());
    assert_eq!((files, paths, samples), (100, 100, 100 * SAMPLES_PER_FILE));
    agent.stop();
    server.stop();
}

#[test]
fn a_wrong_token_is_said_once_and_not_retried_in_a_busy_loop() {
    let env = Env::new();
    let dir = env.dir.path();
    let server = start_server(dir, 0);
    let config = agent_config(
        dir,
        std::slice::from_ref(&server.base),
        "not-the-right-token-at-all",
    );
    std::fs::write(dir.join("agent-spool/x.xml"), result_xml(1)).expect("write");
    let agent = Agent::start(&config);
    agent.wait_log("the refusal", "refused this agent", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let log = agent.log();
    assert_eq!(log.matches("refused this agent").count(), 1, "{log}");
    assert!(log.contains("401"), "{log}");
    assert!(dir.join("agent-spool/x.xml").exists(), "the file stays");
    assert_eq!(server.stats()["files_ingested"], 0);
    agent.stop();
    server.stop();
}

/// A TCP proxy that cuts connections: mid-request after a random number of bytes (the
/// server never sees the request whole), or by dropping the answer to a request big enough
/// to carry files (the server committed them, the agent never hears so and must resend).
struct CuttingProxy {
    port: u16,
    cuts: Arc<AtomicU64>,
    /// Answers to batches of files that were dropped after the server committed them.
    dropped_batch_answers: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// A request body at least this big carries files: a heartbeat (an empty batch) gzips to
/// well under it, and five files' SHA-256 hashes alone are 320 incompressible bytes.
const BATCH_BODY_BYTES: u64 = 400;

impl CuttingProxy {
    fn start(target: String) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cuts = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, d, s) = (cuts.clone(), dropped.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(port);
            let mut connections = 0u32;
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(upstream) = TcpStream::connect(&target) else {
                    continue;
                };
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // The agent keeps its connection alive across requests, so a cut is decided
                // per connection: the first four are cut for sure (alternately on the way
                // in and by dropping a batch's answer), then one in two.
                connections += 1;
                let at = (seed >> 8) % 20_000;
                let cut_in = match (connections <= 4, seed % 4) {
                    (true, _) => connections % 2 == 1,
                    (false, 0) => true,
                    (false, 1) => false,
                    (false, _) => {
                        pump(
                            client.try_clone().expect("clone"),
                            upstream.try_clone().expect("clone"),
                            Cut::Never,
                        );
                        pump(upstream, client, Cut::Never);
                        continue;
                    }
                };
                if cut_in {
                    let cut = Cut::After(200 + at, c.clone());
                    pump(
                        client.try_clone().expect("clone"),
                        upstream.try_clone().expect("clone"),
                        cut,
                    );
                    pump(upstream, client, Cut::Never);
                } else {
                    let armed = Arc::new(AtomicBool::new(false));
                    let watch = Cut::ArmOnBatch(armed.clone());
                    pump(
                        client.try_clone().expect("clone"),
                        upstream.try_clone().expect("clone"),
                        watch,
                    );
                    pump(
                        upstream,
                        client,
                        Cut::WhenArmed(armed, c.clone(), d.clone()),
                    );
                }
            }
        });
        CuttingProxy {
            port,
            cuts,
            dropped_batch_answers: dropped,
            stop,
        }
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// What one direction of a proxied connection does.
enum Cut {
    /// Copies everything.
    Never,
    /// Cuts after this many bytes (and counts the cut).
    After(u64, Arc<AtomicU64>),
    /// Copies everything, and arms the flag when a request's `content-length` says it
    /// carries files (set before the request is forwarded, so before any answer).
    ArmOnBatch(Arc<AtomicBool>),
    /// Drops the first answer that arrives once armed and cuts (counting the cut and the
    /// dropped batch answer).
    WhenArmed(Arc<AtomicBool>, Arc<AtomicU64>, Arc<AtomicU64>),
}

/// The body length a request's headers in `chunk` declare, if they are there.
fn content_length(chunk: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(chunk).to_ascii_lowercase();
    let rest = &text[text.find("content-length:")? + "content-length:".len()..];
    rest.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Copies `from` → `to` as `cut` says, then shuts both down.
fn pump(mut from: TcpStream, mut to: TcpStream, cut: Cut) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut sent = 0u64;
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let n = match &cut {
                Cut::After(limit, cuts) if sent + n as u64 >= *limit => {
                    let keep = usize::try_from(limit - sent).unwrap_or(0);
                    let _ = to.write_all(&buf[..keep]);
                    cuts.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                Cut::ArmOnBatch(armed) => {
                    if content_length(&buf[..n]).is_some_and(|len| len >= BATCH_BODY_BYTES) {
                        armed.store(true, Ordering::SeqCst);
                    }
                    n
                }
                Cut::WhenArmed(armed, cuts, dropped) if armed.load(Ordering::SeqCst) => {
                    cuts.fetch_add(1, Ordering::SeqCst);
                    dropped.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                _ => n,
            };
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
            sent += n as u64;
        }
        let _ = from.shutdown(std::net::Shutdown::Both);
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

#[test]
fn a_proxy_that_cuts_connections_costs_retries_but_no_file_is_lost_or_doubled() {
    let env = Env::new();
    let dir = env.dir.path();
    let server = start_server(dir, 0);
    let proxy = CuttingProxy::start(server.base.trim_start_matches("http://").to_string());
    let config = agent_config(dir, &[format!("http://127.0.0.1:{}", proxy.port)], TOKEN);
    let spool = dir.join("agent-spool");
    let agent = Agent::start(&config);
    // Files arrive in small groups, so many requests (and many cuts) happen.
    for group in 0..60u64 {
        for n in group * 5..group * 5 + 5 {
            write_renamed(&spool.join(format!("f{n:04}.xml")), &result_xml(n));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    server.wait_files(300, Duration::from_secs(120));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !spool_is_empty(&spool) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(spool_is_empty(&spool), "{}", agent.log());
    assert!(
        proxy.cuts.load(Ordering::SeqCst) >= 3,
        "the proxy cut only {} connections",
        proxy.cuts.load(Ordering::SeqCst)
    );
    let (files, paths, samples) = crate::exactly_once::ledger_of(env_store(dir).as_ref());
    assert_eq!(
        (files, paths, samples),
        (300, 300, 300 * SAMPLES_PER_FILE),
        "every file once:\n{}",
        agent.log()
    );
    // A batch whose answer was dropped after the commit is resent, and the server knows
    // its files: they come back as duplicates, not as second copies.
    let dropped = proxy.dropped_batch_answers.load(Ordering::SeqCst);
    assert!(dropped >= 1, "no batch answer was dropped");
    let agents = server.get("/api/v1/agents");
    assert!(
        agents["data"][0]["duplicates"].as_u64().unwrap_or(0) >= 1,
        "{dropped} batch answers dropped, yet no resend met a stored file: {agents}"
    );
    // Every result is in the history once: 300 check results of `login`.
    let history = server.get("/api/v1/query?query=count_over_time(probe_check_status{check=\"login\"}[1h])&time=1700000300");
    let total: f64 = history["data"]["result"]
        .as_array()
        .expect("result")
        .iter()
        .map(|r| {
            r["value"][1]
                .as_str()
                .unwrap_or("0")
                .parse::<f64>()
                .unwrap_or(0.0)
        })
        .sum();
    assert_eq!(total, 300.0, "{history}");
    agent.stop();
    server.stop();
}

#[test]
fn push_stores_a_document_once_and_says_why_a_bad_one_is_refused() {
    let env = Env::new();
    let dir = env.dir.path();
    let server = start_server(dir, 0);
    let push = |body: &str, key: Option<&str>, token: &str| {
        let mut request = reqwest::blocking::Client::new()
            .post(format!("{}/api/v1/push", server.base))
            .bearer_auth(token)
            .body(body.to_string());
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().expect("push");
        let status = response.status().as_u16();
        (status, response.json::<Value>().unwrap_or(Value::Null))
    };
    let ci = "push-token-0123456789abcdef";
    let doc = r#"<probe name="deploy" time="1700000000"><check name="smoke" status="ok"/></probe>"#;
    assert_eq!(push(doc, None, ci), (200, json!({"result": "stored"})));
    assert_eq!(push(doc, None, ci), (200, json!({"result": "duplicate"})));
    // With a key, the key is the identity.
    assert_eq!(push(doc, Some("run-1"), ci).1["result"], "stored");
    assert_eq!(push(doc, Some("run-1"), ci).1["result"], "duplicate");
    let (status, bad) = push("<probe name=\"x\"><check", None, ci);
    assert_eq!(status, 422, "{bad}");
    assert_eq!(bad["result"], "rejected");
    assert!(
        bad["reason"].as_str().unwrap_or("").contains("line 1"),
        "{bad}"
    );
    assert_eq!(push(doc, None, "wrong-token-wrong-token").0, 401);
    // A clock ten minutes ahead: stored at its own time, and flagged.
    let ahead = epoch_secs() + 600;
    let skewed =
        format!(r#"<probe name="skewed" time="{ahead}"><check name="c" status="ok"/></probe>"#);
    assert_eq!(push(&skewed, None, ci).1["result"], "stored");
    let files = server.get("/api/v1/files?status=ingested");
    let flagged: Vec<&Value> = files["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter(|f| f["clock_skew"] == true)
        .collect();
    assert_eq!(flagged.len(), 1, "{files}");
    let found =
        server.get("/api/v1/query?query=probe_check_status{probe=\"deploy\"}&time=1700000000");
    assert_eq!(
        found["data"]["result"][0]["metric"]["host"], "ci",
        "{found}"
    );
    server.stop();
}

#[test]
fn an_agent_that_stops_calling_is_offline_and_its_checks_say_so_instead_of_stale() {
    let env = Env::new();
    let dir = env.dir.path();
    let server = start_server(dir, 0);
    let config = agent_config(dir, std::slice::from_ref(&server.base), TOKEN);
    for n in 0..14u64 {
        std::fs::write(dir.join(format!("agent-spool/f{n}.xml")), result_xml(n)).expect("write");
    }
    let agent = Agent::start(&config);
    server.wait_files(14, Duration::from_secs(60));
    let state = |d: &Daemon| d.get("/api/v1/agents")["data"][0]["state"].clone();
    let online = |d: &Daemon| state(d) == "online";
    server.wait_until("the agent online", Duration::from_secs(30), online);
    // The results are old, so their checks are silent: stale while the agent calls in.
    assert!(!server.get_text("/").contains("agent offline</span>"));
    assert!(server.get_text("/?status=stale").contains("login"));
    let pid = agent.child.id();
    drop(agent); // killed: no goodbye
    server.wait_until("the agent offline", Duration::from_secs(30), |d| {
        state(d) == "offline"
    });
    let page = server.get_text("/?status=offline");
    assert!(
        page.contains("login"),
        "silent checks of web-1 (host h1) are agent offline: {page}"
    );
    let up = server.get("/api/v1/query?query=probewatch_agent_up");
    let values: Vec<(String, String)> = up["data"]["result"]
        .as_array()
        .expect("result")
        .iter()
        .map(|r| {
            (
                r["metric"]["host"].as_str().unwrap_or("").to_string(),
                r["value"][1].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        values.contains(&("h1".into(), "0".into()))
            && values.contains(&("web-1".into(), "0".into())),
        "probewatch_agent_up is 0 for each of its hosts: {up} (agent pid {pid})"
    );
    assert!(server.log().contains("agent offline"), "{}", server.log());
    let ingest = server.get_text("/ingest");
    assert!(ingest.contains("1 offline"), "{ingest}");
    let page = server.get_text("/agents");
    assert!(
        page.contains("id=\"agents\"") && page.contains("status-offline"),
        "{page}"
    );
    // It comes back.
    let agent = Agent::start(&config);
    server.wait_until("the agent back", Duration::from_secs(30), online);
    let up = server.get("/api/v1/query?query=min(probewatch_agent_up)");
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
    agent.stop();
    server.stop();
}

/// Two servers on one PostgreSQL store, each with its own data directory and spool.
fn start_pg_server(dir: &Path, name: &str, url: &str, port: u16) -> Daemon {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).expect("dir");
    Daemon::run_config(
        &server_config(&home),
        &home.join("server-data"),
        &format!("127.0.0.1:{port}"),
        Some(url),
    )
}

fn pg_store(url: &str) -> Arc<dyn probewatch_store::Store> {
    probewatch_store::open_store(
        &probewatch_store::StoreLocation::Postgres(url.to_string()),
        &probewatch_store::StoreOptions::default(),
    )
    .expect("open the PostgreSQL store")
}

/// Check results of `login` in the history, over every probe of result_xml.
fn login_results(server: &Daemon) -> usize {
    (0..7)
        .map(|p| {
            let h = server.get(&format!(
                "/api/v1/checks/history?probe=p{p}&check=login&from=1699999000&to=1700100000&limit=100000"
            ));
            h["results"].as_array().map_or(0, Vec::len)
        })
        .sum()
}

#[test]
fn a_batch_sent_to_two_servers_on_postgresql_at_once_is_stored_once() {
    let Some(pg) = probewatch_testpg::TestPostgres::start() else {
        return;
    };
    let url = pg.create_database("probewatch");
    let env = Env::new();
    let dir = env.dir.path();
    let a = start_pg_server(dir, "a", &url, 0);
    let b = start_pg_server(dir, "b", &url, 0);
    let body = batch(0..60);
    let (status, first) = post(&a.base, "/api/v1/agent/ingest", TOKEN, &body);
    assert_eq!(status, 200, "{first}");
    // Then twice at once, to both servers.
    let sends: Vec<_> = [&a.base, &b.base]
        .into_iter()
        .map(|base| {
            let (base, body) = (base.clone(), body.clone());
            std::thread::spawn(move || post(&base, "/api/v1/agent/ingest", TOKEN, &body))
        })
        .collect();
    for send in sends {
        let (status, answer) = send.join().expect("join");
        assert_eq!(status, 200, "{answer}");
        assert!(
            answer["items"]
                .as_array()
                .expect("items")
                .iter()
                .all(|i| i["result"] == "duplicate"),
            "{answer}"
        );
    }
    let (files, paths, samples) = crate::exactly_once::ledger_of(pg_store(&url).as_ref());
    assert_eq!((files, paths, samples), (60, 60, 60 * SAMPLES_PER_FILE));
    assert_eq!(login_results(&b), 60, "one check result a file");
    a.stop();
    b.stop();
}

#[test]
fn an_agent_fails_over_when_its_server_is_killed_and_nothing_is_stored_twice() {
    let Some(pg) = probewatch_testpg::TestPostgres::start() else {
        return;
    };
    let url = pg.create_database("probewatch");
    let env = Env::new();
    let dir = env.dir.path();
    let (port_a, port_b) = (free_port(), free_port());
    let a = start_pg_server(dir, "a", &url, port_a);
    let b = start_pg_server(dir, "b", &url, port_b);
    let servers = [
        format!("http://127.0.0.1:{port_a}"),
        format!("http://127.0.0.1:{port_b}"),
    ];
    let config = agent_config(dir, &servers, TOKEN);
    let spool = dir.join("agent-spool");
    let agent = Agent::start(&config);
    let writer = {
        let spool = spool.clone();
        std::thread::spawn(move || {
            for n in 0..400u64 {
                write_renamed(&spool.join(format!("f{n:04}.xml")), &result_xml(n));
                if n % 20 == 19 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        })
    };
    // Server a dies under load, mid-request or between a commit and its answer.
    a.wait_until("the first files", Duration::from_secs(60), |d| {
        d.stats()["files_ingested"].as_u64().unwrap_or(0) > 0
    });
    a.kill9();
    writer.join().expect("writer");
    b.wait_files(400, Duration::from_secs(120));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !spool_is_empty(&spool) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(spool_is_empty(&spool), "{}", agent.log());
    let (files, paths, samples) = crate::exactly_once::ledger_of(pg_store(&url).as_ref());
    assert_eq!(
        (files, paths, samples),
        (400, 400, 400 * SAMPLES_PER_FILE),
        "{}",
        agent.log()
    );
    assert_eq!(login_results(&b), 400);
    agent.stop();
    b.stop();
}

/// A result of probe `web` stamped now, naming no host (it takes the agent's name).
fn live_result(login: &str) -> String {
    format!(
        r#"<probe name="web" time="{}" interval="1s"><check name="login" status="{login}">login</check></probe>"#,
        epoch_secs()
    )
}

#[test]
fn servers_down_for_a_while_raise_no_false_absence_alert_and_the_real_one_once() {
    let env = Env::new();
    let dir = env.dir.path();
    let hook = Webhook::start(0);
    let port = free_port();
    std::fs::create_dir_all(dir.join("server-spool")).expect("spool");
    let rules = dir.join("rules.yml");
    std::fs::write(
        &rules,
        r#"
groups:
  - name: checks
    interval: 1s
    rules:
      - alert: CheckSilent
        expr: |
          (time() - max_over_time(timestamp(probe_check_status)[10m:1s])) > 4
          unless on (host) (probewatch_agent_up == 0 or probewatch_agent_draining == 1)
      - alert: LoginCritical
        expr: probe_check_status{check="login"} == 2
"#,
    )
    .expect("rules");
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        format!(
            r#"
rule_files = [{rules:?}]
agent_offline_after = "2s"

[[spool]]
path = {spool:?}

[[agent]]
name = "web-1"
token = "{TOKEN}"

[[receiver]]
name = "ops"
url = {url:?}

[[route]]
receiver = "ops"
group_by = ["alertname"]
group_wait = "0s"
"#,
            rules = rules.display().to_string(),
            spool = dir.join("server-spool").display().to_string(),
            url = hook.url,
        ),
    )
    .expect("config");
    let start = || {
        Daemon::run_config(
            &config,
            &dir.join("server-data"),
            &format!("127.0.0.1:{port}"),
            None,
        )
    };
    let server = start();
    let agent_toml = agent_config(dir, &[format!("http://127.0.0.1:{port}")], TOKEN);
    let agent = Agent::start(&agent_toml);
    let spool = dir.join("agent-spool");
    let written = Arc::new(AtomicU64::new(0));
    let critical = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (spool, written, critical, stop) = (
            spool.clone(),
            written.clone(),
            critical.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let n = written.fetch_add(1, Ordering::SeqCst);
                let status = if critical.load(Ordering::SeqCst) {
                    "critical"
                } else {
                    "ok"
                };
                write_renamed(&spool.join(format!("r{n:05}.xml")), &live_result(status));
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    server.wait_until("results flowing", Duration::from_secs(30), |d| {
        d.stats()["files_ingested"].as_u64().unwrap_or(0) >= 5
    });
    // The server goes away for longer than the silence threshold; meanwhile login fails.
    server.kill9();
    std::thread::sleep(Duration::from_secs(4));
    critical.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(8));
    let server = start();
    server.wait_until("the backlog delivered", Duration::from_secs(60), |d| {
        d.stats()["files_ingested"].as_u64().unwrap_or(0) + 3 >= written.load(Ordering::SeqCst)
    });
    hook.wait_for(1, Duration::from_secs(30));
    // Some evaluations after the drain, with results still flowing.
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer");
    let names: Vec<String> = hook
        .received()
        .iter()
        .filter(|b| b["status"] == "firing")
        .flat_map(|b| {
            b["alerts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|a| a["labels"]["alertname"].as_str().map(String::from))
        })
        .collect();
    assert_eq!(
        names,
        ["LoginCritical"],
        "the real alert once, no absence alert:\n{}",
        server.log()
    );
    agent.stop();
    server.stop();
}

#[test]
fn results_that_arrive_hours_late_land_at_their_own_time() {
    let env = Env::new();
    let dir = env.dir.path();
    let server = start_server(dir, 0);
    let ci = "push-token-0123456789abcdef";
    let now = epoch_secs();
    let push = |time: i64, status: &str| {
        let doc = format!(
            r#"<probe name="late" time="{time}" interval="1m"><check name="c" status="{status}">at {time}</check></probe>"#
        );
        let (status, answer) = {
            let response = reqwest::blocking::Client::new()
                .post(format!("{}/api/v1/push", server.base))
                .bearer_auth(ci)
                .body(doc)
                .send()
                .expect("push");
            (
                response.status().as_u16(),
                response.json::<Value>().unwrap_or(Value::Null),
            )
        };
        assert_eq!(
            (status, &answer["result"]),
            (200, &json!("stored")),
            "{answer}"
        );
    };
    // Fresh results first, then what an agent cut off for hours delivers: older ones.
    push(now - 60, "ok");
    push(now - 30, "ok");
    push(now - 3 * 3600, "critical");
    push(now - 3 * 3600 + 60, "critical");
    // The latest state is still the newest result.
    let checks = server.get("/api/v1/checks");
    let late = checks["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["probe"] == "late")
        .cloned()
        .expect("the check");
    assert_eq!(late["status"], "ok", "{late}");
    assert_eq!(late["time_ms"], (now - 30) * 1000, "{late}");
    // History holds all four, in time order, the late ones three hours back.
    let history = server.get(&format!(
        "/api/v1/checks/history?probe=late&check=c&from={}&to={}",
        now - 4 * 3600,
        now
    ));
    let times: Vec<i64> = history["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["time_ms"].as_i64())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [now - 3 * 3600, now - 3 * 3600 + 60, now - 60, now - 30].map(|t| t * 1000),
        "{history}"
    );
    // PromQL sees the critical status at its own time, and ok now.
    let then = server.get(&format!(
        "/api/v1/query?query=probe_check_status{{probe=\"late\"}}&time={}",
        now - 3 * 3600 + 90
    ));
    assert_eq!(then["data"]["result"][0]["value"][1], "2", "{then}");
    let current = server.get("/api/v1/query?query=probe_check_status{probe=\"late\"}");
    assert_eq!(current["data"]["result"][0]["value"][1], "0", "{current}");
    // The check page's availability over four hours counts the late critical run.
    let page = server.get_text("/check?probe=late&host=ci&check=c&range=6h");
    assert!(
        page.contains("status-critical"),
        "the late run shows on the check page: {page}"
    );
    let last_hour = server.get_text("/check?probe=late&host=ci&check=c&range=1h");
    assert!(
        !last_hour.contains("status-critical"),
        "and only where it belongs: {last_hour}"
    );
    server.stop();
}
