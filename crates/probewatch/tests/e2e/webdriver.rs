//! A real headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`,
//! installed by .ci/run): clicks, typing, dragging and the browser's console log, for the
//! dashboard tests that need more than a page load.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, MouseActions, PointerAction};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// A browser session, closed (and its driver killed) on drop.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    driver_url: String,
    _profile: tempfile::TempDir,
}

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

impl Browser {
    /// A new headless browser, or `None` (with a SKIPPED message) where Chromium or
    /// ChromeDriver is not installed.
    pub fn start(test: &str) -> Option<Browser> {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            if !Path::new(path).exists() {
                eprintln!(
                    "SKIPPED {test}: no {path} (Debian package {package}; .ci/run installs it)"
                );
                return None;
            }
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver_url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().expect("profile");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let caps = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                         "--window-size=1280,1000",
                         format!("--user-data-dir={}", profile.path().display())],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let caps = caps.as_object().cloned().expect("object");
        let client = rt
            .block_on(
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&driver_url),
            )
            .expect("WebDriver session");
        Some(Browser {
            rt,
            client: Some(client),
            driver,
            driver_url,
            _profile: profile,
        })
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("open session")
    }

    /// Loads `url` and waits for the page.
    pub fn goto(&self, url: &str) {
        self.rt
            .block_on(self.client().goto(url))
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    pub fn url(&self) -> String {
        self.rt
            .block_on(self.client().current_url())
            .expect("url")
            .to_string()
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub fn eval(&self, script: &str) -> Value {
        self.rt
            .block_on(self.client().execute(script, Vec::new()))
            .unwrap_or_else(|e| panic!("script {script}: {e}"))
    }

    /// Waits until `script` returns something truthy; returns it.
    pub fn wait_for(&self, what: &str, script: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(script);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} (last: {v}) at {}\nconsole: {:?}",
                self.url(),
                self.console()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn click(&self, css: &str) {
        self.rt
            .block_on(async {
                let el = self.client().find(Locator::Css(css)).await?;
                el.click().await
            })
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Types `text` into the element (WebDriver key codes such as "\u{E004}" for Tab work).
    pub fn type_into(&self, css: &str, text: &str) {
        self.rt
            .block_on(async {
                let el = self.client().find(Locator::Css(css)).await?;
                el.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Sends `keys` to whatever has the focus (WebDriver key codes: "\u{E004}" Tab,
    /// "\u{E007}" Enter).
    pub fn press(&self, keys: &str) {
        self.rt
            .block_on(async {
                let el = self.client().active_element().await?;
                el.send_keys(keys).await
            })
            .unwrap_or_else(|e| panic!("press {keys:?}: {e}"));
    }

    /// Presses the mouse at `from` (fraction of the element's width, at half its height)
    /// and releases it at `to`, moving in steps like a person.
    pub fn drag_across(&self, css: &str, from: f64, to: f64) {
        let rect = self.eval(&format!(
            "const e = document.querySelector({css:?});
             e.scrollIntoView({{ block: 'center', inline: 'center' }});
             const r = e.getBoundingClientRect();
             return [r.left, r.top, r.width, r.height];"
        ));
        let n = |i: usize| rect[i].as_f64().expect("rect");
        let (left, top, width, height) = (n(0), n(1), n(2), n(3));
        let y = (top + height / 2.0).round();
        let x = |f: f64| (left + width * f).round();
        let mut mouse = MouseActions::new("mouse".into())
            .then(PointerAction::MoveTo {
                duration: None,
                x: x(from),
                y,
            })
            .then(PointerAction::Down {
                button: fantoccini::actions::MOUSE_BUTTON_LEFT,
            });
        for step in 1..=5 {
            let f = from + (to - from) * step as f64 / 5.0;
            mouse = mouse.then(PointerAction::MoveTo {
                duration: Some(Duration::from_millis(30)),
                x: x(f),
                y,
            });
        }
        mouse = mouse.then(PointerAction::Up {
            button: fantoccini::actions::MOUSE_BUTTON_LEFT,
        });
        self.rt
            .block_on(self.client().perform_actions(mouse))
            .unwrap_or_else(|e| panic!("drag across {css}: {e}"));
    }

    /// Moves the mouse over the element, `x` of the way across, at half its height.
    pub fn hover(&self, css: &str, x: f64) {
        let rect = self.eval(&format!(
            "const e = document.querySelector({css:?});
             e.scrollIntoView({{ block: 'center', inline: 'center' }});
             const r = e.getBoundingClientRect();
             return [r.left + r.width * {x}, r.top + r.height / 2];"
        ));
        let at = |i: usize| rect[i].as_f64().expect("point").round();
        let mouse = MouseActions::new("mouse".into()).then(PointerAction::MoveTo {
            duration: Some(Duration::from_millis(50)),
            x: at(0),
            y: at(1),
        });
        self.rt
            .block_on(self.client().perform_actions(mouse))
            .unwrap_or_else(|e| panic!("hover {css}: {e}"));
    }

    /// Resizes the browser window (CSS pixels).
    pub fn resize(&self, width: u32, height: u32) {
        self.rt
            .block_on(self.client().set_window_size(width, height))
            .expect("resize");
    }

    /// The browser console's messages since the last call (Chrome's log endpoint).
    pub fn console(&self) -> Vec<String> {
        let id = self
            .rt
            .block_on(self.client().session_id())
            .ok()
            .flatten()
            .unwrap_or_default();
        let url = format!("{}/session/{id}/se/log", self.driver_url);
        reqwest::blocking::Client::new()
            .post(&url)
            .json(&json!({"type": "browser"}))
            .send()
            .and_then(|r| r.json::<Value>())
            .map(|v| {
                v["value"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| format!("{} {}", e["level"], e["message"]))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Fails on any console error or warning since the last call.
    pub fn assert_clean_console(&self, page: &str) {
        let bad: Vec<String> = self
            .console()
            .into_iter()
            .filter(|m| m.contains("SEVERE") || m.contains("WARNING"))
            .collect();
        assert!(bad.is_empty(), "console errors on {page}: {bad:#?}");
    }

    /// Saves a screenshot as `<target tmp>/screenshots/<name>.png`.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .rt
            .block_on(self.client().screenshot())
            .expect("screenshot");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.rt.block_on(client.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
