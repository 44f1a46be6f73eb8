//! The dashboard over real ingested files: with a real HTTP client, and in a real headless
//! Chromium (Debian's `chromium`, installed by .ci/run; skipped with a message where absent).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::*;

const XSS: &str = "<script>alert(1)</script>";

/// A spool with a check named like an XSS attempt, a failing check, and a probe that
/// declared a 60 s interval but last reported ten minutes ago.
fn dashboard_env() -> (Env, Daemon) {
    let env = Env::new();
    let now = epoch_secs();
    std::fs::write(
        env.spool().join("web.xml"),
        format!(
            r#"<probe name="web" host="h1" time="{now}" interval="60s">
  <check name="&lt;script&gt;alert(1)&lt;/script&gt;" status="ok">fine &lt;b&gt;bold&lt;/b&gt;</check>
  <check name="login" status="critical">timeout after 5s</check>
</probe>"#
        ),
    )
    .expect("write");
    std::fs::write(
        env.spool().join("old.xml"),
        format!(
            r#"<probe name="batch" host="h2" time="{}" interval="60s">
  <check name="nightly" status="ok">done</check>
</probe>"#,
            now - 600
        ),
    )
    .expect("write");
    let daemon = env.start(&[]);
    daemon.wait_files(2, Duration::from_secs(30));
    (env, daemon)
}

#[test]
fn overview_shows_states_escapes_probe_text_and_filters() {
    let (_env, daemon) = dashboard_env();
    let html = daemon.get_text("/");
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{html}"
    );
    assert!(!html.contains(XSS), "probe text must never become markup");
    assert!(html.contains("fine &#60;b&#62;bold&#60;/b&#62;"));
    // Status as a word, not only a colour; the silent probe is stale, not "ok".
    assert!(html.contains(r#"<span class="status status-critical">critical</span>"#));
    assert!(
        html.contains(r#"<span class="status status-stale">stale</span>"#),
        "{html}"
    );
    assert!(html.contains("3 checks"), "{html}");
    let problems = daemon.get_text("/?status=problem");
    assert!(problems.contains("login") && problems.contains("nightly"));
    assert!(!problems.contains("alert(1)"), "ok checks are filtered out");
    let by_host = daemon.get_text("/?group=host&q=nightly");
    assert!(
        by_host.contains("<h2>h2</h2>") && !by_host.contains("login"),
        "{by_host}"
    );
    // The check page and the explorer escape it too.
    let check = daemon
        .get_text("/check?probe=web&host=h1&check=%3Cscript%3Ealert(1)%3C%2Fscript%3E&range=1h");
    assert!(
        check.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{check}"
    );
    assert!(!check.contains(XSS), "probe text must never become markup");
    let graph = daemon.get_text("/graph?expr=probe_check_status");
    assert!(graph.contains("check=&#34;&#60;script&#62;"), "{graph}");
    assert!(!graph.contains(XSS));
    let fragment = daemon.get_text("/?fragment=1");
    assert!(fragment.trim_start().starts_with("<section") && !fragment.contains("<html"));
    let css = reqwest::blocking::get(format!("{}/static/app.css", daemon.base)).expect("css");
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    daemon.stop();
}

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Runs headless Chromium on `url`: the DOM after `budget_ms` of virtual time, and its log.
fn browse(chrome: &Path, url: &str, budget_ms: u64, screenshot: Option<&Path>) -> (String, String) {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut cmd = Command::new(chrome);
    cmd.args([
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1200,800",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--virtual-time-budget={budget_ms}"));
    match screenshot {
        Some(path) => cmd.arg(format!("--screenshot={}", path.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(url).output().expect("run chromium");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn overview_in_a_real_browser() {
    let Some(chrome) = chromium() else {
        eprintln!(
            "SKIPPED: no Chromium at /usr/bin/chromium (Debian package chromium; .ci/run installs it)"
        );
        return;
    };
    let (_env, daemon) = dashboard_env();
    let url = format!("{}/", daemon.base);
    // 7 s of virtual time: the page's 5 s live refresh has run once.
    let (dom, log) = browse(&chrome, &url, 7000, None);
    assert!(
        dom.contains("id=\"checks\""),
        "page did not load: {dom}\n{log}"
    );
    assert!(
        dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{dom}"
    );
    assert!(
        !dom.contains(XSS),
        "the XSS check name became a script element"
    );
    assert!(
        dom.contains("data-refreshed="),
        "live refresh did not run:\n{log}"
    );
    for bad in ["Uncaught", "SyntaxError", "Failed to load resource"] {
        assert!(!log.contains(bad), "console error ({bad}):\n{log}");
    }
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let shot = shots.join("overview.png");
    browse(&chrome, &url, 1000, Some(&shot));
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 1000)
            .unwrap_or(false),
        "no screenshot at {}",
        shot.display()
    );
    daemon.stop();
}

#[test]
fn demo_mode_shows_probes_and_raises_alerts_within_a_minute() {
    let daemon = Daemon::spawn(&["demo".into(), "--listen".into(), "127.0.0.1:0".into()]);
    daemon.wait_until("four demo probes", Duration::from_secs(20), |d| {
        let checks = d.get("/api/v1/checks");
        let probes: std::collections::BTreeSet<String> = checks["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["probe"].as_str().map(String::from))
            .collect();
        probes.len() >= 4
    });
    // The flapping search check changes status every 3 s: more than 6 changes in ~21 s.
    daemon.wait_until("a firing alert", Duration::from_secs(60), |d| {
        d.get("/api/v1/alerts")["data"]["alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["state"] == "firing"))
    });
    let page = daemon.get_text("/");
    assert!(
        page.contains("chat-frontend") && page.contains("search"),
        "{page}"
    );
    daemon.stop();
}

#[test]
fn alerts_and_rules_pages_over_http_and_in_the_browser() {
    let env = Env::new();
    std::fs::create_dir_all(env.data()).expect("dir");
    let rules = env.data().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: probes\n    rules:\n      - alert: LoginCritical\n        expr: probe_check_status{check=\"login\"} == 2\n        annotations:\n          summary: '{{ $labels.probe }} login is critical'\n",
    )
    .expect("rules");
    let cfg = format!(
        "api_token = \"t0ken\"\nrule_files = [{:?}]\n[[spool]]\npath = {:?}\n",
        rules.display().to_string(),
        env.spool().display().to_string()
    );
    let daemon = env.start_with_config(&cfg);
    std::fs::write(
        env.spool().join("a.xml"),
        format!(
            r#"<probe name="web" host="h1" time="{}"><check name="login" status="critical">down</check></probe>"#,
            epoch_secs()
        ),
    )
    .expect("write");
    daemon.wait_until("firing", Duration::from_secs(10), |d| {
        d.get("/api/v1/alerts")["data"]["alerts"][0]["state"] == "firing"
    });
    let created = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/silences", daemon.base))
        .bearer_auth("t0ken")
        .body(r#"{"matchers": ["probe=\"web\""], "duration": "1h", "createdBy": "ops", "comment": "deploy"}"#)
        .send()
        .expect("POST");
    assert!(created.status().is_success());
    // A silenced alert is hidden by default (as in Alertmanager's UI), and shown on request.
    assert!(
        daemon
            .get_text("/alerts")
            .contains("1 silenced alert hidden")
    );
    let alerts = daemon.get_text("/alerts?silenced=1");
    assert!(
        alerts.contains("LoginCritical") && alerts.contains("web login is critical"),
        "{alerts}"
    );
    assert!(alerts.contains(r#"<span class="status status-critical">firing</span>"#));
    assert!(
        alerts.contains("probe=&#34;web&#34;") && alerts.contains("deploy"),
        "{alerts}"
    );
    assert!(
        alerts.contains("<td>firing</td>"),
        "history lists the change: {alerts}"
    );
    let rules_page = daemon.get_text("/rules");
    assert!(
        rules_page.contains("LoginCritical") && rules_page.contains("firing"),
        "{rules_page}"
    );
    if let Some(chrome) = chromium() {
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&shots).expect("screenshot dir");
        for page in ["alerts", "rules"] {
            let url = format!("{}/{page}", daemon.base);
            let (dom, log) = browse(&chrome, &url, 1000, None);
            assert!(dom.contains("LoginCritical"), "{page} did not load: {log}");
            for bad in ["Uncaught", "SyntaxError", "Failed to load resource"] {
                assert!(
                    !log.contains(bad),
                    "console error on {page} ({bad}):\n{log}"
                );
            }
            browse(
                &chrome,
                &url,
                1000,
                Some(&shots.join(format!("{page}.png"))),
            );
        }
    } else {
        eprintln!("SKIPPED (browser part): no Chromium at /usr/bin/chromium");
    }
    daemon.stop();
}

#[test]
fn ingest_page_lists_rejected_files_with_their_error() {
    let env = Env::new();
    std::fs::write(env.spool().join("good.xml"), result_xml(1)).expect("write");
    std::fs::write(
        env.spool().join("bad <probe>.xml"),
        "<probe name=\"p\">\n  <check name=\"c\" status=\"fine\"/>\n</probe>",
    )
    .expect("write");
    let daemon = env.start(&[]);
    daemon.wait_until("both files", Duration::from_secs(30), |d| {
        let s = d.stats();
        s["files_ingested"] == 1 && s["files_rejected"] == 1
    });
    let page = daemon.get_text("/ingest");
    assert!(
        page.contains("<td>spool</td><td>1</td><td>1</td>"),
        "{page}"
    );
    assert!(
        page.contains("bad &#60;probe&#62;.xml"),
        "file names are escaped: {page}"
    );
    assert!(page.contains("unknown status"), "the exact error: {page}");
    assert!(page.contains("line 2"), "with its position: {page}");
    if let Some(chrome) = chromium() {
        let (dom, log) = browse(&chrome, &format!("{}/ingest", daemon.base), 1000, None);
        assert!(dom.contains("Rejected files"), "{log}");
        assert!(!log.contains("Uncaught"), "{log}");
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&shots).expect("dir");
        browse(
            &chrome,
            &format!("{}/ingest", daemon.base),
            1000,
            Some(&shots.join("ingest.png")),
        );
    }
    daemon.stop();
}

#[test]
fn access_control_guards_every_page_and_api_but_healthz() {
    let env = Env::new();
    std::fs::create_dir_all(env.data()).expect("dir");
    let password_file = env.data().join("ui-password");
    std::fs::write(&password_file, "correct horse\n").expect("password");
    let cfg = format!(
        "api_token = \"t0ken\"\n[access]\nusername = \"ops\"\npassword_file = {:?}\n[[spool]]\npath = {:?}\n",
        password_file.display().to_string(),
        env.spool().display().to_string()
    );
    let daemon = env.start_with_config(&cfg);
    daemon.wait_until(
        "the access line of the banner",
        Duration::from_secs(10),
        |d| d.log().contains("basic auth as \"ops\""),
    );
    let client = reqwest::blocking::Client::new();
    let url = |p: &str| format!("{}{p}", daemon.base);
    for path in [
        "/",
        "/check?probe=a&host=&check=b",
        "/graph",
        "/api/v1/checks",
        "/api/v1/query?query=1",
        "/metrics",
        "/static/app.js",
    ] {
        let open = client.get(url(path)).send().expect("GET");
        assert_eq!(open.status(), 401, "{path} without credentials");
        assert!(
            open.headers()["www-authenticate"]
                .to_str()
                .unwrap_or("")
                .starts_with("Basic realm=\"probewatch\""),
            "{path}: browsers must be asked for a password"
        );
        let wrong = client
            .get(url(path))
            .basic_auth("ops", Some("wrong"))
            .send()
            .expect("GET");
        assert_eq!(wrong.status(), 401, "{path} with a wrong password");
    }
    let ok = client
        .get(url("/"))
        .basic_auth("ops", Some("correct horse"))
        .send()
        .expect("GET");
    assert_eq!(ok.status(), 200);
    // Machines (Grafana, scripts) may use the API token instead.
    let api = client
        .get(url("/api/v1/query?query=1"))
        .bearer_auth("t0ken")
        .send()
        .expect("GET");
    assert_eq!(api.status(), 200);
    // Load balancers' health checks need no credentials.
    let health = client.get(url("/healthz")).send().expect("GET");
    assert_eq!(health.status(), 200);
    daemon.stop();
}

#[test]
fn probe_text_with_bidi_controls_cannot_reorder_the_page() {
    let env = Env::new();
    // U+202E (right-to-left override) in a check name and a message.
    std::fs::write(
        env.spool().join("bidi.xml"),
        format!(
            r#"<probe name="web" host="h1" time="{}">
  <check name="gol&#x202E;in" status="critical">&#x202E;ti detaerc</check>
</probe>"#,
            epoch_secs()
        ),
    )
    .expect("write");
    let daemon = env.start(&[]);
    daemon.wait_files(1, Duration::from_secs(30));
    let check = daemon.get_text("/check?probe=web&host=h1&check=gol%E2%80%AEin");
    assert!(
        check.contains("<bdi>gol\u{202E}in</bdi>")
            && check.contains("<bdi class=\"message\">\u{202E}ti detaerc</bdi>"),
        "probe text on the check page is isolated: {check}"
    );
    if let Some(browser) = crate::webdriver::Browser::start("probe_text_with_bidi_controls") {
        browser.goto(&format!("{}/", daemon.base));
        let isolated = browser.eval(
            "return [...document.querySelectorAll('td.message, td a')]
                .filter(e => e.textContent.includes('\\u202e'))
                .map(e => getComputedStyle(e.closest('td')).unicodeBidi);",
        );
        // The problems table at the top and the full list below: each cell isolated.
        assert_eq!(
            isolated,
            serde_json::json!(["isolate", "isolate", "isolate", "isolate"]),
            "overview cells"
        );
        browser.goto(&format!(
            "{}/check?probe=web&host=h1&check=gol%E2%80%AEin",
            daemon.base
        ));
        let isolated = browser.eval(
            "return [...document.querySelectorAll('h2 bdi, bdi.message')]
                .map(e => getComputedStyle(e).unicodeBidi);",
        );
        assert_eq!(
            isolated,
            serde_json::json!(["isolate", "isolate", "isolate", "isolate"]),
            "check page"
        );
        browser.assert_clean_console("bidi check page");
    }
    daemon.stop();
}

/// Past one page of checks the overview pages them, problems first, with links that keep
/// the filters; the live refresh's fragment answers 304 while nothing changed, and the
/// table again once a result arrives.
#[test]
fn the_overview_pages_problems_first_and_refreshes_only_what_changed() {
    let env = Env::new();
    let now = epoch_secs();
    let checks: String = (0..250)
        .map(|i| {
            let status = if i == 137 { "critical" } else { "ok" };
            format!("<check name=\"c{i:03}\" status=\"{status}\">r</check>\n")
        })
        .collect();
    std::fs::write(
        env.spool().join("many.xml"),
        format!("<probe name=\"big\" host=\"h1\" time=\"{now}\">\n{checks}</probe>"),
    )
    .expect("write");
    let daemon = env.start(&[]);
    daemon.wait_files(1, Duration::from_secs(30));
    let first = daemon.get_text("/");
    assert!(first.contains("250 checks: 1 critical, 249 ok"), "{first}");
    assert!(first.contains("page 1 of 2"), "{first}");
    let critical_at = first
        .find(">c137<")
        .expect("the critical check is on page 1");
    let ok_at = first.find(">c000<").expect("then the ok ones");
    assert!(critical_at < ok_at, "problems first");
    assert!(first.contains("Probes with problems") && first.contains("1 critical"));
    let second = daemon.get_text("/?page=2");
    assert!(
        second.contains("page 2 of 2") && second.contains(">c249<"),
        "{second}"
    );
    assert!(!second.contains(">c137<"), "each check on one page");
    // The fragment: 200 with an ETag, then 304 for the same ETag while nothing changed.
    let client = reqwest::blocking::Client::new();
    let url = format!("{}/?fragment=1", daemon.base);
    let answer = client.get(&url).send().expect("fragment");
    assert_eq!(answer.status().as_u16(), 200);
    let etag = answer.headers()["etag"].to_str().expect("etag").to_string();
    let again = client
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .expect("fragment");
    assert_eq!(again.status().as_u16(), 304);
    assert!(again.text().expect("body").is_empty());
    std::fs::write(
        env.spool().join("more.xml"),
        format!("<probe name=\"big\" host=\"h1\" time=\"{}\"><check name=\"c000\" status=\"warning\">w</check></probe>", now + 1),
    )
    .expect("write");
    daemon.wait_files(2, Duration::from_secs(30));
    let changed = client
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .expect("fragment");
    assert_eq!(
        changed.status().as_u16(),
        200,
        "a new result changes the page"
    );
    daemon.stop();
}
