//! The browser half of `probewatch bench-dashboard --browser`: how long the overview blocks a
//! real headless Chromium's main thread, on load and on each live refresh while results
//! change underneath it. Spoken over WebDriver (Debian's `chromium-driver`) with plain JSON
//! requests: a session, a page load and a few scripts need no WebDriver crate.
//!
//! A main-thread block is measured three ways: the browser's Long Tasks and Long Animation
//! Frames APIs (tasks, and frames with their style, layout and paint, over 50 ms), and a
//! heartbeat — a zero-delay message loop whose longest gap between beats is the longest
//! stretch the page did not yield, short ones included.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Where the browser and its driver are.
#[derive(Debug, Clone)]
pub struct BrowserPaths {
    /// Chromium.
    pub chromium: PathBuf,
    /// ChromeDriver.
    pub chromedriver: PathBuf,
}

/// A headless Chromium session; the driver is killed on drop.
struct Session {
    driver: Child,
    http: reqwest::blocking::Client,
    url: String,
    _profile: tempfile::TempDir,
}

impl Session {
    fn start(paths: &BrowserPaths) -> anyhow::Result<Session> {
        for path in [&paths.chromium, &paths.chromedriver] {
            if !path.exists() {
                bail!(
                    "{} is not installed (Debian packages chromium and chromium-driver)",
                    path.display()
                );
            }
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let driver = Command::new(&paths.chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", paths.chromedriver.display()))?;
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("chromedriver did not listen within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir()?;
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?;
        let mut session = Session {
            driver,
            http,
            url: base.clone(),
            _profile: profile,
        };
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--no-first-run".into(),
            "--window-size=1280,1000".into(),
            format!("--user-data-dir={}", session._profile.path().display()),
        ];
        let created = session.call(
            "POST",
            "/session",
            json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
                "binary": paths.chromium, "args": args}}}}),
        )?;
        let id = created["sessionId"]
            .as_str()
            .context("WebDriver answered no session id")?;
        session.url = format!("{base}/session/{id}");
        session.call("POST", "/timeouts", json!({"script": 60_000}))?;
        Ok(session)
    }

    /// One WebDriver command; its `value`.
    fn call(&self, method: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.url);
        let request = match method {
            "POST" => self.http.post(&url).json(&body),
            _ => self.http.delete(&url),
        };
        let answer: Value = request
            .send()
            .with_context(|| format!("WebDriver {method} {path}"))?
            .json()?;
        if let Some(error) = answer["value"]["error"].as_str() {
            bail!(
                "WebDriver {path}: {error}: {}",
                answer["value"]["message"].as_str().unwrap_or("")
            );
        }
        Ok(answer["value"].clone())
    }

    fn open(&self, url: &str) -> anyhow::Result<()> {
        self.call("POST", "/url", json!({ "url": url }))?;
        Ok(())
    }

    /// Runs `script` (which calls `done(value)`) and returns its value.
    fn run(&self, script: &str) -> anyhow::Result<Value> {
        let body = format!("const done = arguments[arguments.length - 1];\n{script}");
        self.call(
            "POST",
            "/execute/async",
            json!({"script": body, "args": []}),
        )
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.call("DELETE", "", Value::Null);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Starts the heartbeat and the long-task observer; `finish()` stops them and returns
/// `{gap, longtasks}`.
const PROBE: &str = r#"
function watchMainThread(buffered) {
  const longtasks = [];
  const observer = new PerformanceObserver(function (list) {
    list.getEntries().forEach(function (e) { longtasks.push(e.duration); });
  });
  observer.observe({ type: "longtask", buffered: buffered });
  let frame = 0, blocking = 0;
  const frameObserver = new PerformanceObserver(function (list) {
    list.getEntries().forEach(function (e) {
      frame = Math.max(frame, e.duration);
      blocking = Math.max(blocking, e.blockingDuration);
    });
  });
  frameObserver.observe({ type: "long-animation-frame", buffered: buffered });
  let gap = 0, last = performance.now(), beating = true;
  const channel = new MessageChannel();
  channel.port1.onmessage = function () {
    const now = performance.now();
    gap = Math.max(gap, now - last);
    last = now;
    if (beating) channel.port2.postMessage(0);
  };
  channel.port2.postMessage(0);
  return function finish() {
    beating = false;
    observer.disconnect();
    frameObserver.disconnect();
    return { gap: gap, longtasks: longtasks, frame: frame, blocking: blocking };
  };
}
"#;

/// What one measurement saw.
#[derive(Debug, Clone, Default)]
pub struct MainThread {
    /// The longest stretch without yielding (heartbeat), ms.
    pub longest_block_ms: f64,
    /// The longest animation frame over 50 ms (script, style, layout and paint together;
    /// 0 when none was that long), ms.
    pub longest_frame_ms: f64,
    /// The most "blocking duration" of a long frame: how much of its tasks' time went past
    /// 50 ms each, which is what delays a click or a key (0: no task in it was that long).
    pub frame_blocking_ms: f64,
    /// Long tasks (over 50 ms) the browser reported, their durations in ms.
    pub long_tasks: Vec<f64>,
    /// How long the step took from start to its end (load: response end to DOM ready;
    /// refresh: from asking to the rows being patched), ms.
    pub wall_ms: f64,
    /// Rows in the overview's tables afterwards.
    pub rows: u64,
    /// A refresh's HTTP status: 200 when new rows came (and were patched in), 304 when
    /// the page's timer had already fetched them.
    pub status: u64,
}

fn main_thread(v: &Value) -> MainThread {
    MainThread {
        longest_block_ms: v["gap"].as_f64().unwrap_or(0.0),
        longest_frame_ms: v["frame"].as_f64().unwrap_or(0.0),
        frame_blocking_ms: v["blocking"].as_f64().unwrap_or(0.0),
        long_tasks: v["longtasks"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default(),
        wall_ms: v["wall"].as_f64().unwrap_or(0.0),
        rows: v["rows"].as_u64().unwrap_or(0),
        status: v["status"].as_u64().unwrap_or(0),
    }
}

/// Loads `url` (the overview) `rounds` times, then refreshes it `rounds` times, calling
/// `change(round)` before each refresh so that the rows really change. Returns each load
/// and each refresh.
pub fn overview(
    paths: &BrowserPaths,
    url: &str,
    rounds: usize,
    change: &mut dyn FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<(Vec<MainThread>, Vec<MainThread>)> {
    let session = Session::start(paths)?;
    // Each load: long tasks and frames from the buffer (the heartbeat cannot start before
    // the page does).
    let mut loads = Vec::new();
    for _ in 0..rounds {
        session.open(url)?;
        let load = session.run(&format!(
            r##"{PROBE}
        const finish = watchMainThread(true);
        setTimeout(function () {{
          const nav = performance.getEntriesByType("navigation")[0];
          const out = finish();
          out.gap = 0;
          out.wall = nav.domContentLoadedEventEnd - nav.responseEnd;
          out.rows = document.querySelectorAll("#checks tbody > tr").length;
          done(out);
        }}, 300);"##
        ))?;
        loads.push(main_thread(&load));
    }
    let mut refreshes = Vec::new();
    for round in 0..rounds {
        change(round)?;
        // The page refreshes when it becomes visible again; that event starts one now.
        let seen = session.run(&format!(
            r#"{PROBE}
            const box = document.getElementById("checks");
            const before = box.dataset.refreshed || "";
            const realFetch = window.fetch;
            let status = 0;
            window.fetch = function () {{
              return realFetch.apply(this, arguments).then(function (r) {{ status = r.status; return r; }});
            }};
            const finish = watchMainThread(false);
            const started = performance.now();
            document.dispatchEvent(new Event("visibilitychange"));
            (function wait() {{
              if ((box.dataset.refreshed || "") === before) return setTimeout(wait, 2);
              const wall = performance.now() - started;
              setTimeout(function () {{
                const out = finish();
                window.fetch = realFetch;
                out.wall = wall;
                out.status = status;
                out.rows = box.querySelectorAll("tbody > tr").length;
                done(out);
              }}, 100);
            }})();"#
        ))?;
        refreshes.push(main_thread(&seen));
    }
    Ok((loads, refreshes))
}

/// The default paths of Debian's packages.
pub fn debian_paths() -> BrowserPaths {
    BrowserPaths {
        chromium: Path::new("/usr/bin/chromium").to_path_buf(),
        chromedriver: Path::new("/usr/bin/chromedriver").to_path_buf(),
    }
}
