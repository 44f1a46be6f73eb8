//! Problems first: the overview opens on what is wrong, silence is a series, a probe's
//! refused file and its alerts show on its check page, availability reports, the pages'
//! time zone, and pages that work on a phone and without telling colours apart.

use std::time::Duration;

use serde_json::Value;

use crate::util::{Env, Webhook, receivers_config, result_at};
use crate::webdriver::Browser;

#[test]
fn problems_come_first_with_since_a_silent_probe_is_one_row_and_probe_check_stale_alerts() {
    let env = Env::new();
    let hook = Webhook::start(0);
    let now = crate::util::epoch_secs();
    let spool = env.spool();
    // web on h1: login ok, then critical from 300 s ago; search warning for 5 s.
    let mut n = 0;
    let mut put = |text: String| {
        n += 1;
        crate::util::write_renamed(&spool.join(format!("r{n:03}.xml")), &text);
    };
    put(result_at(
        "web",
        "h1",
        now - 600,
        "1h",
        &[("login", "ok"), ("search", "ok")],
    ));
    put(result_at(
        "web",
        "h1",
        now - 300,
        "1h",
        &[("login", "critical"), ("search", "ok")],
    ));
    put(result_at(
        "web",
        "h1",
        now - 5,
        "1h",
        &[("login", "critical"), ("search", "warning")],
    ));
    // batch on h2 reports every second and stopped a minute ago: all three checks silent.
    put(result_at(
        "batch",
        "h2",
        now - 60,
        "1s",
        &[("a", "ok"), ("b", "ok"), ("c", "critical")],
    ));
    // Many healthy checks, named to sort before the problems.
    for i in 0..40 {
        put(result_at(
            &format!("aaa{i:02}"),
            "h3",
            now - 2,
            "1h",
            &[("ping", "ok")],
        ));
    }
    let rules = env.dir.path().join("silent.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: silence\n    rules:\n      - alert: ProbeSilent\n        \
         expr: min by (probe, host) (probe_check_stale) == 1\n",
    )
    .expect("rules");
    let daemon = env.start_with_config(&format!(
        "evaluation_interval = \"1s\"\nrule_files = [{:?}]\n\
         [[receiver]]\nname = \"ops\"\nurl = {:?}\n\
         [[route]]\nreceiver = \"ops\"\ngroup_wait = \"0s\"\n\
         [[spool]]\npath = {:?}\n",
        rules.display().to_string(),
        hook.url,
        spool.display().to_string()
    ));
    daemon.wait_files(44, Duration::from_secs(60));

    // The API: status= filters by what the dashboard shows; since is when the state began.
    let critical = daemon.get("/api/v1/checks?status=critical");
    let checks = critical["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 1, "{critical}");
    assert_eq!(checks[0]["check"], "login");
    assert_eq!(checks[0]["stale"], false);
    assert_eq!(checks[0]["since_ms"], (now - 300) * 1000, "{critical}");
    let stale = daemon.get("/api/v1/checks?status=stale");
    let stale = stale["checks"].as_array().expect("checks");
    assert_eq!(stale.len(), 3, "{stale:?}");
    assert!(
        stale
            .iter()
            .all(|c| c["stale"] == true && c["probe"] == "batch")
    );
    assert_eq!(
        stale[0]["since_ms"],
        (now - 60) * 1000,
        "silent since its last result"
    );
    assert_eq!(
        daemon.get("/api/v1/checks?status=problem")["checks"]
            .as_array()
            .map(Vec::len),
        Some(5)
    );
    let bad = reqwest::blocking::get(format!("{}/api/v1/checks?status=broken", daemon.base))
        .expect("GET");
    assert_eq!(bad.status().as_u16(), 400);

    // The overview opens on the problems: worst first, newest change first, and the silent
    // probe as one row for its three checks.
    let page = daemon.get_text("/");
    let problems = &page[page.find("id=\"problems\"").expect("a problems table")..];
    let problems = &problems[..problems.find("</table>").expect("end")];
    let rows: Vec<&str> = problems.split("<tr class=\"row-").skip(1).collect();
    assert_eq!(rows.len(), 3, "{problems}");
    assert!(
        rows[0].starts_with("critical")
            && rows[0].contains("<bdi>web</bdi> · <bdi>h1</bdi> · <bdi>login</bdi>"),
        "{}",
        rows[0]
    );
    assert!(rows[0].contains("5 min"), "critical for 5 min: {}", rows[0]);
    assert!(
        rows[1].starts_with("warning") && rows[1].contains("search"),
        "{}",
        rows[1]
    );
    assert!(
        rows[2].starts_with("stale")
            && rows[2].contains("probe <bdi>batch</bdi> on <bdi>h2</bdi>")
            && rows[2].contains("(3 checks)"),
        "{}",
        rows[2]
    );
    assert!(
        page.find("id=\"problems\"") < page.find("aaa00"),
        "problems come before the healthy checks"
    );

    // Silence is a series: one generic rule alerts on the silent probe.
    daemon.wait_until("probe_check_stale", Duration::from_secs(30), |d| {
        let q = d.get("/api/v1/query?query=sum(probe_check_stale{probe=\"batch\"})");
        q["data"]["result"][0]["value"][1] == "3"
    });
    let got = hook.wait_for(1, Duration::from_secs(30));
    assert_eq!(
        got[0]["alerts"][0]["labels"]["alertname"], "ProbeSilent",
        "{got:?}"
    );
    assert_eq!(got[0]["alerts"][0]["labels"]["probe"], "batch", "{got:?}");
    assert_eq!(got[0]["alerts"][0]["labels"]["host"], "h2", "{got:?}");
    let healthy = daemon.get("/api/v1/query?query=probe_check_stale{probe=\"web\"}");
    assert_eq!(
        healthy["data"]["result"],
        serde_json::json!([]),
        "only silent checks get a 1"
    );

    // In a browser: a refresh patches the rows in place; focus and scroll stay put.
    if let Some(browser) = Browser::start("problems_come_first") {
        browser.resize(900, 500);
        browser.goto(&format!("{}/", daemon.base));
        let login = "#problems a[href*='check=login']";
        browser.eval(&format!(
            "document.querySelector(\"{login}\").focus(); window.scrollTo(0, 150); return 1;"
        ));
        let scrolled = browser.eval("return window.scrollY;");
        put(result_at(
            "web",
            "h1",
            crate::util::epoch_secs(),
            "1h",
            &[("login", "critical"), ("search", "critical")],
        ));
        // search turned critical just now: it moves to the top, newest change first.
        browser.wait_for(
            "the refreshed problems",
            "const r = document.querySelectorAll('#problems tbody tr'); \
             return r.length > 1 && r[0].textContent.includes('search') \
               && r[0].className === 'row-critical';",
            Duration::from_secs(30),
        );
        let focused = browser.eval("return document.activeElement.getAttribute('href');");
        assert!(
            focused.as_str().unwrap_or("").contains("check=login"),
            "focus stays on the link it was on: {focused}"
        );
        assert_eq!(
            browser.eval("return window.scrollY;"),
            scrolled,
            "scroll stays"
        );
        // A hidden tab does not refresh.
        browser.eval(
            "Object.defineProperty(document, 'hidden', { configurable: true, get: () => true }); return 1;",
        );
        std::thread::sleep(Duration::from_secs(1));
        let before = browser.eval("return document.getElementById('checks').dataset.refreshed;");
        std::thread::sleep(Duration::from_secs(6));
        let after = browser.eval("return document.getElementById('checks').dataset.refreshed;");
        assert_eq!(before, after, "no refresh while hidden");
        browser.assert_clean_console("overview");
    }

    // batch reports again: 0, and the alert resolves.
    put(result_at(
        "batch",
        "h2",
        crate::util::epoch_secs(),
        "1h",
        &[("a", "ok"), ("b", "ok"), ("c", "ok")],
    ));
    daemon.wait_until(
        "probe_check_stale back to 0",
        Duration::from_secs(30),
        |d| {
            let q = d.get("/api/v1/query?query=max(probe_check_stale{probe=\"batch\"})");
            q["data"]["result"][0]["value"][1] == "0"
        },
    );
    hook.wait_for(2, Duration::from_secs(30));
    let last = hook.received().pop().expect("resolved");
    assert_eq!(last["status"], "resolved", "{last}");
    daemon.stop();
}

#[test]
fn a_probes_refused_file_shows_on_its_check_page() {
    let env = Env::new();
    let daemon = env.start(&[]);
    let now = crate::util::epoch_secs();
    crate::util::write_renamed(
        &env.spool().join("good.xml"),
        &result_at("web", "h1", now - 60, "1m", &[("login", "ok")]),
    );
    daemon.wait_files(1, Duration::from_secs(30));
    let page = daemon.get_text("/check?probe=web&host=h1&check=login");
    assert!(!page.contains("Last file rejected"), "{page}");
    // The next file from the probe is broken: status "PASS" is not a status.
    crate::util::write_renamed(
        &env.spool().join("bad.xml"),
        &format!(
            "<probe name=\"web\" host=\"h1\" time=\"{now}\">\n  <check name=\"login\" status=\"PASS\"/>\n</probe>\n"
        ),
    );
    daemon.wait_files(2, Duration::from_secs(30));
    let rejected = daemon.get("/api/v1/files?status=rejected");
    let error = rejected["files"][0]["error"].as_str().unwrap_or("");
    assert!(
        error.contains("probe \"web\"") && error.contains("PASS"),
        "{rejected}"
    );
    let page = daemon.get_text("/check?probe=web&host=h1&check=login");
    assert!(page.contains("Last file rejected"), "{page}");
    assert!(page.contains("bad.xml") && page.contains("PASS"), "{page}");
    // Another probe's page says nothing of it.
    crate::util::write_renamed(
        &env.spool().join("other.xml"),
        &result_at("db", "h1", now, "1m", &[("ping", "ok")]),
    );
    daemon.wait_files(3, Duration::from_secs(30));
    let other = daemon.get_text("/check?probe=db&host=h1&check=ping");
    assert!(!other.contains("Last file rejected"), "{other}");
    // A good file again: the note goes.
    crate::util::write_renamed(
        &env.spool().join("good2.xml"),
        &result_at(
            "web",
            "h1",
            crate::util::epoch_secs() + 2,
            "1m",
            &[("login", "ok")],
        ),
    );
    daemon.wait_files(4, Duration::from_secs(30));
    let page = daemon.get_text("/check?probe=web&host=h1&check=login");
    assert!(!page.contains("Last file rejected"), "{page}");
    daemon.stop();
}

#[test]
fn the_check_chart_marks_status_changes_and_alert_changes() {
    let env = Env::new();
    let hook = Webhook::start(0);
    let rules = crate::util::critical_rule(&env);
    let daemon = crate::util::start_with_rules(&env, &hook, &rules, "");
    let write = |n: u32, at: i64, status: &str| {
        crate::util::write_renamed(
            &env.spool().join(format!("r{n}.xml")),
            &format!(
                "<probe name=\"web\" host=\"h1\" time=\"{at}\" interval=\"1h\">\n  \
                 <check name=\"login\" status=\"{status}\" duration=\"0.{n}\">x</check>\n</probe>\n"
            ),
        );
    };
    let now = crate::util::epoch_secs();
    write(1, now - 600, "ok");
    write(2, now - 300, "ok");
    daemon.wait_files(2, Duration::from_secs(30));
    write(3, crate::util::epoch_secs(), "critical");
    daemon.wait_until("firing", Duration::from_secs(30), |d| {
        d.get("/api/v1/alerts")["data"]["alerts"][0]["state"] == "firing"
    });
    write(4, crate::util::epoch_secs() + 1, "ok");
    daemon.wait_until("resolved", Duration::from_secs(30), |d| {
        d.get("/api/v1/alerts")["data"]["alerts"]
            .as_array()
            .is_some_and(Vec::is_empty)
    });
    let page = daemon.get_text("/check?probe=web&host=h1&check=login&range=1h");
    let marks = page
        .split("data-marks=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("marks")
        .replace("&#34;", "\"")
        .replace("&quot;", "\"");
    let marks: Value = serde_json::from_str(&marks).expect("marks JSON");
    let texts: Vec<&str> = marks
        .as_array()
        .expect("marks")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    for wanted in [
        "ok → critical",
        "critical → ok",
        "CheckCritical firing",
        "CheckCritical resolved",
    ] {
        assert!(texts.contains(&wanted), "{wanted} in {texts:?}");
    }
    if let Some(browser) = Browser::start("the_check_chart_marks") {
        browser.goto(&format!(
            "{}/check?probe=web&host=h1&check=login&range=1h",
            daemon.base
        ));
        let marked = browser.wait_for(
            "the marked chart",
            "const el = document.getElementById('duration-chart');
             return el.dataset.marked && el.layout ? [Number(el.dataset.marked), el.layout.shapes.length] : null;",
            Duration::from_secs(20),
        );
        assert_eq!(marked[0], marked[1]);
        assert!(marked[0].as_u64() >= Some(4), "{marked}");
        browser.assert_clean_console("check page");
    }
    daemon.stop();
}

#[test]
fn availability_over_a_calendar_month_per_probe_with_a_no_data_policy_and_as_csv() {
    let env = Env::new();
    let daemon = env.start(&[]);
    // A day 40 days ago: web ok for an hour from 10:00, then critical for half an hour.
    let day = crate::util::epoch_secs() / 86_400 * 86_400 - 40 * 86_400;
    for (at, status) in [
        (day + 36_000, "ok"),
        (day + 39_600, "critical"),
        (day + 41_400, "critical"),
    ] {
        crate::util::write_renamed(
            &env.spool().join(format!("w{at}.xml")),
            &result_at("web", "h1", at, "1h", &[("login", status)]),
        );
        crate::util::write_renamed(
            &env.spool().join(format!("d{at}.xml")),
            &result_at("db", "h2", at, "1h", &[("ping", "ok")]),
        );
    }
    daemon.wait_files(6, Duration::from_secs(30));
    let date = jiff::Timestamp::from_second(day)
        .expect("day")
        .strftime("%Y-%m-%d")
        .to_string();
    let report = daemon.get(&format!("/api/v1/availability?period=month&at={date}"));
    let groups = report["data"]["groups"].as_array().expect("groups");
    let web = groups.iter().find(|g| g["name"] == "web").expect("web");
    assert_eq!(
        (web["okSeconds"].as_i64(), web["problemSeconds"].as_i64()),
        (Some(3600), Some(1800)),
        "{report}"
    );
    assert_eq!(
        web["availabilityPercent"], 66.667,
        "of the time with results: {report}"
    );
    assert!(
        report["data"]["from"]
            .as_str()
            .is_some_and(|f| f.ends_with("-01T00:00:00Z")),
        "a calendar month in UTC: {report}"
    );
    let down = daemon.get(&format!(
        "/api/v1/availability?period=month&at={date}&nodata=down"
    ));
    let web_down = down["data"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["name"] == "web")
        .expect("web")
        .clone();
    let share = web_down["availabilityPercent"].as_f64().expect("percent");
    assert!(
        share > 0.0 && share < 1.0,
        "an hour ok in a month with silence counted down: {down}"
    );
    // Per host, and as CSV.
    let by_host = daemon.get(&format!(
        "/api/v1/availability?period=week&at={date}&by=host"
    ));
    let names: Vec<&str> = by_host["data"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert_eq!(names, ["h1", "h2"]);
    let response = reqwest::blocking::get(format!(
        "{}/api/v1/availability?period=month&at={date}&format=csv",
        daemon.base
    ))
    .expect("GET");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/csv")
    );
    let csv = response.text().expect("csv");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some(
            "probe,checks,from,to,ok_seconds,problem_seconds,no_data_seconds,maintenance_seconds,availability_percent"
        )
    );
    assert!(
        csv.lines().any(|l| l.starts_with("web,1,")
            && l.contains(",3600,1800,")
            && l.ends_with(",66.667")),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.starts_with("db,1,") && l.ends_with(",100.000")),
        "{csv}"
    );
    let bad = reqwest::blocking::get(format!("{}/api/v1/availability?period=year", daemon.base))
        .expect("GET");
    assert_eq!(bad.status().as_u16(), 400);
    daemon.stop();
}

#[test]
fn pages_show_times_in_the_configured_time_zone() {
    let env = Env::new();
    let daemon = env.start_with_config(&format!(
        "time_zone = \"Asia/Shanghai\"\n[[spool]]\npath = {:?}\n",
        env.spool().display().to_string()
    ));
    let now = crate::util::epoch_secs();
    for (n, at) in [(1, now - 1200), (2, now - 600)] {
        crate::util::write_renamed(
            &env.spool().join(format!("r{n}.xml")),
            &format!(
                "<probe name=\"web\" host=\"h1\" time=\"{at}\" interval=\"1h\">\n  \
                 <check name=\"login\" status=\"ok\" duration=\"0.{n}\">x</check>\n</probe>\n"
            ),
        );
    }
    daemon.wait_files(2, Duration::from_secs(30));
    // A custom range typed in local time: 10:00 in Shanghai is 02:00 UTC.
    let page = daemon
        .get_text("/check?probe=web&host=h1&check=login&from=2026-11-23T10:00&to=2026-11-23T12:00");
    assert!(page.contains("From (Asia/Shanghai)"), "{page}");
    assert!(
        page.contains("value=\"2026-11-23T10:00\""),
        "the input shows local time: {page}"
    );
    assert!(
        page.contains("datetime=\"2026-11-23T02:00:00Z\""),
        "the range is 02:00 UTC: {page}"
    );
    // Strip titles in the overview use the zone.
    let overview = daemon.get_text("/");
    assert!(overview.contains("Asia/Shanghai ("), "{overview}");
    if let Some(browser) = Browser::start("pages_show_times_in_the_configured_time_zone") {
        browser.goto(&format!(
            "{}/check?probe=web&host=h1&check=login&range=1h",
            daemon.base
        ));
        let axis = browser.wait_for(
            "the chart",
            "const el = document.getElementById('duration-chart');
             return el.layout ? [el.layout.xaxis.title.text, el.layout.xaxis.range[1], Number(el.dataset.to)] : null;",
            Duration::from_secs(20),
        );
        assert_eq!(axis[0], "time (Asia/Shanghai)");
        // The axis ends at the range's end shown in Shanghai time (UTC+8): plotly draws in
        // UTC, so every time is shifted by the zone's offset.
        let end_utc = axis[2].as_i64().expect("to");
        assert_eq!(axis[1].as_i64(), Some(end_utc + 8 * 3_600_000), "{axis}");
        browser.assert_clean_console("check page");
    }
    daemon.stop();
}

#[test]
fn pages_fit_a_phone_keep_table_headers_have_a_skip_link_and_strips_say_more_than_colour() {
    let Some(browser) = Browser::start("pages_fit_a_phone") else {
        return;
    };
    let env = Env::new();
    let hook = Webhook::start(0);
    let daemon = env.start_with_config(&receivers_config(&env, &hook, ""));
    let now = crate::util::epoch_secs();
    let long = "a-very-long-unbroken-message-".repeat(12);
    for (i, status) in ["ok", "critical", "warning", "critical"].iter().enumerate() {
        crate::util::write_renamed(
            &env.spool().join(format!("r{i}.xml")),
            &format!(
                "<probe name=\"web\" host=\"h1\" time=\"{}\" interval=\"1h\">\n  \
                 <check name=\"login\" status=\"{status}\">{long}</check>\n</probe>\n",
                now - 3000 + i as i64 * 600
            ),
        );
    }
    daemon.wait_files(4, Duration::from_secs(30));
    browser.resize(390, 844);
    let width = browser.eval("return window.innerWidth;");
    assert!(
        width.as_u64().is_some_and(|w| w <= 400),
        "a phone-sized window: {width}"
    );
    for page in [
        "/",
        "/alerts",
        "/notifications",
        "/check?probe=web&host=h1&check=login",
        "/graph",
        "/rules",
        "/ingest",
        "/agents",
    ] {
        browser.goto(&format!("{}{page}", daemon.base));
        let wider = browser.eval(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
        );
        assert_eq!(wider, 0, "{page} is wider than a 390 px screen");
        let hidden_heads = browser.eval(
            "return [...document.querySelectorAll('thead')]
               .filter(h => getComputedStyle(h).display === 'none').length;",
        );
        assert_eq!(hidden_heads, 0, "{page} keeps its tables' headers");
        // The first Tab reaches the skip link, and it leads to the content.
        browser.eval("document.activeElement.blur(); window.scrollTo(0, 0); return 1;");
        browser.press("\u{E004}");
        assert_eq!(
            browser.eval("return document.activeElement.className;"),
            "skip-link",
            "{page}"
        );
        browser.press("\u{E007}");
        assert_eq!(
            browser.eval("return document.activeElement.id;"),
            "main",
            "{page}"
        );
        browser.assert_clean_console(page);
    }
    // Status strips: not ok is a pattern as well as a colour, and the strip says it in words.
    browser.goto(&format!("{}/", daemon.base));
    let fill = browser.eval(
        "const r = document.querySelector('#checks svg.strip rect.fill-critical');
         return r ? getComputedStyle(r).fill : null;",
    );
    assert!(
        fill.as_str().unwrap_or("").contains("pattern-critical"),
        "{fill}"
    );
    let label = browser
        .eval("return document.querySelector('#checks svg.strip').getAttribute('aria-label');");
    let label = label.as_str().unwrap_or("");
    assert!(
        label.starts_with("last 24 hours:")
            && label.contains("critical")
            && label.contains("warning"),
        "{label}"
    );
    daemon.stop();
}
