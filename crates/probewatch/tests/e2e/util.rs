//! Test helpers: a real `probewatch` process on a temporary spool and data directory, and a
//! real HTTP client against it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_probewatch");

/// A result file with one check and two metrics, unique per `n` (its time differs).
pub fn result_xml(n: u64) -> String {
    result_xml_from(n, 1_700_000_000)
}

/// [`result_xml`] stamped from an hour before the test run's start instead of 2023: for
/// tests that run long enough for the daemon's first retention pass (a minute after it
/// starts), which deletes samples older than 90 days.
pub fn recent_result_xml(n: u64) -> String {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| u64::try_from(epoch_secs()).unwrap_or(0) - 3600);
    result_xml_from(n, base)
}

fn result_xml_from(n: u64, base: u64) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<probe name="p{probe}" host="h1" time="{time}">
  <check name="login" status="{status}" duration="0.{n:03}">result {n}</check>
  <metric name="online_users" value="{n}"/>
  <metric name="queue_depth" value="17"><label name="queue" value="q{probe}"/></metric>
</probe>
"#,
        probe = n % 7,
        time = base + n,
        status = if n.is_multiple_of(5) {
            "critical"
        } else {
            "ok"
        },
    )
}

/// Samples per [`result_xml`] file: status + duration + two metrics.
pub const SAMPLES_PER_FILE: u64 = 4;

/// A temporary directory with `spool/` and `data/`; with `PROBEWATCH_TEST_STORE=postgres`
/// also a PostgreSQL server of its own, which every daemon it starts uses as its store (as
/// the store's behaviour suite does), so that the daemon's tests can be run on either back
/// end.
pub struct Env {
    pub dir: tempfile::TempDir,
    postgres: Option<(probewatch_testpg::TestPostgres, String)>,
}

impl Env {
    pub fn new() -> Env {
        let on_postgres = std::env::var("PROBEWATCH_TEST_STORE").is_ok_and(|s| s == "postgres");
        Env::with_postgres(on_postgres)
    }

    /// An env with no PostgreSQL server of its own whatever `PROBEWATCH_TEST_STORE` says:
    /// for tests of SQLite's own faults (its database file deleted or locked by another
    /// process), and for tests whose daemons name a store of the test's making.
    pub fn without_postgres() -> Env {
        Env::with_postgres(false)
    }

    fn with_postgres(on_postgres: bool) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("spool")).expect("spool");
        let postgres = on_postgres
            .then(probewatch_testpg::TestPostgres::start)
            .flatten()
            .map(|pg| {
                let url = pg.create_database("probewatch");
                (pg, url)
            });
        Env { dir, postgres }
    }

    /// The arguments that select this env's store (none for the default SQLite one), unless
    /// `extra` names a store itself: for the daemon and the commands that open the store.
    pub fn store_args(&self, extra: &[&str]) -> Vec<String> {
        match &self.postgres {
            Some((_, url)) if !extra.contains(&"--store") => vec!["--store".into(), url.clone()],
            _ => Vec::new(),
        }
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts `probewatch run` on this spool and data directory, on a free port.
    pub fn start(&self, extra: &[&str]) -> Daemon {
        let mut args = vec![
            "run".to_string(),
            "--spool".into(),
            self.spool().display().to_string(),
            "--data".into(),
            self.data().display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(self.store_args(extra));
        Daemon::spawn(&args)
    }

    /// Starts `probewatch run --config FILE` with this data directory.
    pub fn start_with_config(&self, config: &str) -> Daemon {
        let path = self.dir.path().join("probewatch.toml");
        std::fs::write(&path, config).expect("write config");
        // A config that names its store (a fleet's shared database) keeps it.
        let names_store = config
            .lines()
            .any(|l| l.split('=').next().is_some_and(|key| key.trim() == "store"));
        let store = match &self.postgres {
            Some((_, url)) if !names_store => Some(url.as_str()),
            _ => None,
        };
        Daemon::run_config(&path, &self.data(), "127.0.0.1:0", store)
    }

    /// Starts `run` on one spool (this env's) read as `format` (`json`, `nagios`, …).
    pub fn start_with_spool_format(&self, format: &str) -> Daemon {
        self.start_with_config(&format!(
            "[[spool]]\npath = {:?}\nformat = {format:?}\n",
            self.spool().display().to_string()
        ))
    }

    /// Opens the daemon's store through the store's own API (as a second reader beside a
    /// running daemon, or after it stopped), for counts the HTTP API does not expose.
    pub fn store(&self) -> std::sync::Arc<dyn probewatch_store::Store> {
        let location = match &self.postgres {
            Some((_, url)) => probewatch_store::StoreLocation::Postgres(url.clone()),
            None => probewatch_store::StoreLocation::Sqlite(self.data()),
        };
        probewatch_store::open_store(&location, &probewatch_store::StoreOptions::default())
            .expect("open the store")
    }
}

/// Writes `content` the way most probes do: open, a few writes with pauses, close.
pub fn write_chunked(path: &Path, content: &str, chunks: usize, pause: Duration) {
    let mut file = std::fs::File::create(path).expect("create");
    let bytes = content.as_bytes();
    let step = bytes.len().div_ceil(chunks.max(1));
    for chunk in bytes.chunks(step) {
        file.write_all(chunk).expect("write");
        file.flush().expect("flush");
        std::thread::sleep(pause);
    }
}

/// Writes a temporary file and renames it into place.
pub fn write_renamed(path: &Path, content: &str) {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, content).expect("write tmp");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A running daemon; killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub base: String,
    pub output: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Daemon {
    /// Starts the binary with `args`; returns once it serves HTTP and its startup scan ended.
    pub fn spawn(args: &[String]) -> Daemon {
        Daemon::spawn_wrapped(&[], args)
    }

    /// `probewatch run --config C --data D --listen L [--store URL]`.
    pub fn run_config(config: &Path, data: &Path, listen: &str, store: Option<&str>) -> Daemon {
        let mut args = vec![
            "run".to_string(),
            "--config".into(),
            config.display().to_string(),
            "--data".into(),
            data.display().to_string(),
            "--listen".into(),
            listen.to_string(),
        ];
        if let Some(url) = store {
            args.extend(["--store".to_string(), url.to_string()]);
        }
        Daemon::spawn(&args)
    }

    /// [`Daemon::spawn`] under a wrapper command (`prlimit --nofile=40:40 --`).
    pub fn spawn_wrapped(wrapper: &[&str], args: &[String]) -> Daemon {
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let mut child = command
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn probewatch");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let out = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("http://").nth(1) {
                    let addr = rest.split('/').next().unwrap_or_default().to_string();
                    let _ = tx.send(addr);
                }
                out.lock().expect("lock").push_str(&format!("{line}\n"));
            }
        });
        let err = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                err.lock().expect("lock").push_str(&format!("{line}\n"));
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                std::thread::sleep(Duration::from_millis(200));
                panic!("daemon did not start:\n{}", output.lock().expect("lock"));
            }
        };
        let daemon = Daemon {
            child,
            base: format!("http://{addr}"),
            output,
        };
        daemon.wait_until("startup scan", Duration::from_secs(60), |d| {
            d.log().contains("startup scan finished")
        });
        daemon
    }

    pub fn log(&self) -> String {
        self.output.lock().expect("lock").clone()
    }

    pub fn get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.base);
        let response = reqwest::blocking::get(&url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(
            response.status().is_success(),
            "GET {url}: {}",
            response.status()
        );
        response.json().expect("json")
    }

    pub fn get_text(&self, path: &str) -> String {
        let url = format!("{}{path}", self.base);
        reqwest::blocking::get(&url)
            .and_then(|r| r.text())
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// GET as a basic-auth user (a daemon with `[access]`), the body as text.
    pub fn get_text_as(&self, user: &str, password: &str, path: &str) -> String {
        let url = format!("{}{path}", self.base);
        reqwest::blocking::Client::new()
            .get(&url)
            .basic_auth(user, Some(password))
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// GET as a basic-auth user, the body as JSON.
    pub fn get_json_as(&self, user: &str, password: &str, path: &str) -> Value {
        serde_json::from_str(&self.get_text_as(user, password, path)).expect("json")
    }

    /// `/api/v1/stats`, or `None` while the daemon answers with an error (its store away).
    pub fn try_stats(&self) -> Option<Value> {
        let response = reqwest::blocking::get(format!("{}/api/v1/stats", self.base)).ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().ok()
    }

    pub fn stats(&self) -> Value {
        self.get("/api/v1/stats")
    }

    /// Value of an unlabelled counter in /metrics.
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.get_text("/metrics");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.strip_prefix(name))
            .filter(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Polls `cond` every 50 ms until it holds; panics with the log after `timeout`.
    pub fn wait_until(&self, what: &str, timeout: Duration, cond: impl Fn(&Daemon) -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}; log:\n{}", self.log());
    }

    /// Waits until `files_ingested + files_rejected` reaches `n`.
    pub fn wait_files(&self, n: u64, timeout: Duration) {
        self.wait_until(&format!("{n} files"), timeout, |d| {
            let s = d.stats();
            s["files_ingested"].as_u64().unwrap_or(0) + s["files_rejected"].as_u64().unwrap_or(0)
                >= n
        });
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub fn sigstop(&self) {
        self.signal("-STOP");
    }

    pub fn sigcont(&self) {
        self.signal("-CONT");
    }

    pub fn sighup(&self) {
        self.signal("-HUP");
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> String {
        self.signal("-TERM");
        let status = self.child.wait().expect("wait");
        std::thread::sleep(Duration::from_millis(100));
        assert!(status.success(), "unclean exit {status}:\n{}", self.log());
        self.log()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on loopback (for a peer started as a separate process).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits until `base`/-/ready answers 2xx (a Prometheus or Alertmanager starting up).
pub fn wait_ready(base: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while reqwest::blocking::get(format!("{base}/-/ready"))
        .map_or(true, |r| !r.status().is_success())
    {
        assert!(Instant::now() < deadline, "{what} did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads one HTTP/1.1 request from `stream`: its request line and its body
/// (`Content-Length` bytes).
pub fn read_request(stream: &TcpStream) -> (String, Vec<u8>) {
    let (request_line, _, body) = read_request_with_headers(stream);
    (request_line, body)
}

/// Like [`read_request`], with the headers (names in lower case).
pub fn read_request_with_headers(stream: &TcpStream) -> (String, Vec<(String, String)>, Vec<u8>) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    let _ = reader.read_line(&mut request_line);
    let mut length = 0usize;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
            if name == "content-length" {
                length = value.parse().unwrap_or(0);
            }
            headers.push((name, value));
        }
    }
    let mut body = vec![0u8; length];
    let _ = reader.read_exact(&mut body);
    (request_line, headers, body)
}

/// A webhook receiver: records every POSTed body; answers 503 to the first `fail_first`.
pub struct Webhook {
    pub url: String,
    pub bodies: Arc<Mutex<Vec<(Instant, Value)>>>,
    /// Request lines (`POST /hook HTTP/1.1`) of accepted requests.
    pub requests: Arc<Mutex<Vec<String>>>,
    /// `User-Agent` of every request.
    pub user_agents: Arc<Mutex<Vec<String>>>,
    /// `Idempotency-Key` of every request that had one.
    pub keys: Arc<Mutex<Vec<String>>>,
}

impl Webhook {
    pub fn start(fail_first: usize) -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(AtomicUsize::new(0));
        let record = bodies.clone();
        let record_request = requests.clone();
        let user_agents = Arc::new(Mutex::new(Vec::new()));
        let record_agent = user_agents.clone();
        let keys = Arc::new(Mutex::new(Vec::new()));
        let record_key = keys.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (request_line, headers, body) = read_request_with_headers(&stream);
                if let Some((_, agent)) = headers.iter().find(|(k, _)| k == "user-agent") {
                    record_agent.lock().expect("lock").push(agent.clone());
                }
                if let Some((_, key)) = headers.iter().find(|(k, _)| k == "idempotency-key") {
                    record_key.lock().expect("lock").push(key.clone());
                }
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let status = if n < fail_first {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                if n >= fail_first
                    && let Ok(json) = serde_json::from_slice(&body)
                {
                    record.lock().expect("lock").push((Instant::now(), json));
                    record_request
                        .lock()
                        .expect("lock")
                        .push(request_line.trim().to_string());
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Webhook {
            url,
            bodies,
            requests,
            user_agents,
            keys,
        }
    }

    pub fn received(&self) -> Vec<Value> {
        self.bodies
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "webhook got {} notifications, wanted {n}: {:?}",
            self.received().len(),
            self.received()
        );
    }
}

/// Seconds since the epoch, for result files stamped now.
pub fn epoch_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A config with a working receiver `ops`, a dead one `pager` (nothing listens on its
/// port) and `extra` prepended.
pub fn receivers_config(env: &Env, hook: &Webhook, extra: &str) -> String {
    format!(
        "{extra}\n[[receiver]]\nname = \"ops\"\nurl = {:?}\n\
         [[receiver]]\nname = \"pager\"\nurl = \"http://127.0.0.1:{}/dead\"\ntimeout = \"2s\"\n\
         [[spool]]\npath = {:?}\n",
        hook.url,
        free_port(),
        env.spool().display().to_string()
    )
}

/// A result of `probe` on `host` at `at` (Unix seconds) with `checks` (name, status).
pub fn result_at(
    probe: &str,
    host: &str,
    at: i64,
    interval: &str,
    checks: &[(&str, &str)],
) -> String {
    let checks: String = checks
        .iter()
        .map(|(name, status)| {
            format!("  <check name=\"{name}\" status=\"{status}\">{name} is {status}</check>\n")
        })
        .collect();
    format!(
        "<probe name=\"{probe}\" host=\"{host}\" time=\"{at}\" interval=\"{interval}\">\n{checks}</probe>\n"
    )
}

/// A rule file with one rule, `CheckCritical: probe_check_status == 2`, in `env`'s
/// directory.
pub fn critical_rule(env: &Env) -> PathBuf {
    let rules = env.dir.path().join("critical.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: checks\n    rules:\n      - alert: CheckCritical\n        \
         expr: probe_check_status == 2\n",
    )
    .expect("rules");
    rules
}

/// Starts `run` with [`receivers_config`], `rules` evaluated every second, and `extra`
/// settings (e.g. `api_token = "t0ken"`) before them.
pub fn start_with_rules(env: &Env, hook: &Webhook, rules: &Path, extra: &str) -> Daemon {
    env.start_with_config(&receivers_config(
        env,
        hook,
        &format!(
            "{extra}\nevaluation_interval = \"1s\"\nrule_files = [{:?}]",
            rules.display().to_string()
        ),
    ))
}

/// Runs `probewatch run --config <config>` expecting it to refuse to start; its stderr.
pub fn refused_start(env: &Env, config: &Path) -> String {
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(config)
        .arg("--data")
        .arg(env.data())
        .output()
        .expect("run");
    assert!(!out.status.success(), "the start was not refused");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
