//! The history views over real ingested files: the check detail page (availability from
//! status intervals, timeline, range picker, zoom, duration chart), the metrics explorer and
//! the ingest page's rate and latency — over HTTP, and in headless Chromium driven by
//! WebDriver (clicks, typing, dragging; console errors fail the test).

use std::time::Duration;

use crate::util::*;
use crate::webdriver::Browser;

/// 180 results of web/login on h1, one a minute for the last three hours: ok, except
/// critical for the 30 results 90 to 60 minutes ago; durations 0.1 s with one 9 s spike.
fn three_hours(env: &Env) -> i64 {
    let now = epoch_secs();
    let first = now - 180 * 60;
    let mut xml = String::from("<results>\n");
    for i in 0..180i64 {
        let status = if (90..120).contains(&i) {
            "critical"
        } else {
            "ok"
        };
        let duration = if i == 100 { 9.0 } else { 0.1 };
        xml.push_str(&format!(
            "<probe name=\"web\" host=\"h1\" time=\"{}\" interval=\"60s\"><check name=\"login\" status=\"{status}\" duration=\"{duration}\">result {i}</check></probe>\n",
            first + i * 60
        ));
    }
    xml.push_str("</results>\n");
    std::fs::write(env.spool().join("history.xml"), xml).expect("write");
    first
}

/// A daemon that has ingested [`three_hours`].
fn three_hours_daemon() -> (Env, Daemon) {
    let env = Env::new();
    three_hours(&env);
    let daemon = env.start(&[]);
    daemon.wait_files(1, Duration::from_secs(30));
    (env, daemon)
}

/// The text of a gzipped body.
fn gunzip(body: &[u8]) -> String {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(body), &mut text)
        .expect("gunzip");
    text
}

const CHECK: &str = "/check?probe=web&host=h1&check=login";

#[test]
fn check_page_shows_availability_changes_and_results_for_the_range() {
    let (_env, daemon) = three_hours_daemon();
    let page = daemon.get_text(&format!("{CHECK}&range=6h"));
    // ok [0, 90] and [120, 179] minutes, critical [90, 120]: 149 of 179 minutes ok.
    assert!(page.contains(">83.240 %</strong>"), "{page}");
    assert!(
        page.contains("30 min 0 s"),
        "critical for 30 minutes: {page}"
    );
    let changes = page.split("id=\"changes\"").nth(1).expect("changes table");
    let changes = changes.split("</table>").next().unwrap_or_default();
    assert_eq!(changes.matches("<tr>").count(), 3 + 1, "{changes}");
    assert!(page.contains("result 179"), "newest result listed: {page}");
    assert!(page.contains("fill-critical"), "timeline shows it: {page}");
    assert!(
        page.contains("Reports every 1 min 0 s (declared)"),
        "{page}"
    );
    // The last hour was all ok.
    let hour = daemon.get_text(&format!("{CHECK}&range=1h"));
    assert!(hour.contains(">100.000 %</strong>"), "{hour}");
    // A custom range inside the critical stretch.
    let now = epoch_secs();
    let custom = daemon.get_text(&format!(
        "{CHECK}&from={}&to={}",
        (now - 85 * 60) * 1000,
        (now - 65 * 60) * 1000
    ));
    assert!(custom.contains(">0.000 %</strong>"), "{custom}");
    assert!(custom.contains("data-range=\"custom\""));
    // Durations: raw when few, min/max per column when many, spike kept.
    let d =
        daemon.get("/api/v1/checks/durations?probe=web&host=h1&check=login&range=6h&width=1000");
    assert_eq!(d["raw"], true);
    assert_eq!(d["samples"], 180);
    let d = daemon.get("/api/v1/checks/durations?probe=web&host=h1&check=login&range=6h&width=20");
    assert_eq!(d["raw"], false);
    assert!(d["t"].as_array().map_or(0, Vec::len) <= 20, "{d}");
    let max = d["max"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_f64())
        .fold(0.0, f64::max);
    assert_eq!(max, 9.0, "the spike survives downsampling: {d}");
    // Errors are specific.
    let missing = reqwest::blocking::get(format!(
        "{}/check?probe=web&host=h1&check=nope",
        daemon.base
    ))
    .expect("GET");
    assert_eq!(missing.status(), 404);
    let bad = reqwest::blocking::get(format!("{}{CHECK}&range=2w", daemon.base)).expect("GET");
    assert_eq!(bad.status(), 400);
    // People follow links to pages: the error is a page too, saying what was wrong.
    assert!(
        bad.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/html")
    );
    let text = bad.text().unwrap_or_default();
    assert!(
        text.contains("unknown range \"2w\"") || text.contains("unknown range &#34;2w&#34;"),
        "{text}"
    );
    // plotly.js comes from the binary: gzipped when asked, revalidated by its ETag.
    let client = reqwest::blocking::Client::new();
    let js = client
        .get(format!("{}/static/plotly.min.js", daemon.base))
        .header("accept-encoding", "gzip")
        .send()
        .expect("GET plotly");
    assert_eq!(js.headers()["content-encoding"], "gzip");
    let etag = js.headers()["etag"].clone();
    let body = js.bytes().expect("body");
    assert!(body.len() > 1_000_000);
    // Gzipped once (not again by the compression layer): one gunzip gives the source.
    let source = gunzip(&body);
    assert!(
        source.starts_with("/**\n* plotly.js v"),
        "{}",
        &source[..60.min(source.len())]
    );
    let again = client
        .get(format!("{}/static/plotly.min.js", daemon.base))
        .header("if-none-match", etag)
        .send()
        .expect("GET plotly again");
    assert_eq!(again.status(), 304);
    // Pages are gzipped for clients that accept it.
    let page = client
        .get(format!("{}/", daemon.base))
        .header("accept-encoding", "gzip")
        .send()
        .expect("GET /");
    assert_eq!(page.headers()["content-encoding"], "gzip");
    let html = gunzip(&page.bytes().expect("body"));
    assert!(html.contains("class=\"strip\""), "{html}");
    // The overview links to it and draws the last 24 h.
    let overview = daemon.get_text("/");
    assert!(
        overview.contains("href=\"/check?probe=web&#38;host=h1&#38;check=login\""),
        "{overview}"
    );
    assert!(overview.contains("class=\"strip\"") && overview.contains("fill-critical"));
    daemon.stop();
}

#[test]
fn check_page_in_a_browser_chart_range_picker_and_zoom() {
    let Some(browser) = Browser::start("check_page_in_a_browser") else {
        return;
    };
    let (_env, daemon) = three_hours_daemon();
    browser.goto(&format!("{}{CHECK}&range=6h", daemon.base));
    let drawn = browser.wait_for(
        "the duration chart",
        "return document.getElementById('duration-chart').dataset.drawn;",
        Duration::from_secs(20),
    );
    assert_eq!(drawn, "180", "every result is a point");
    let traces = browser
        .eval("return document.querySelectorAll('#duration-chart .scatterlayer .trace').length;");
    assert_eq!(traces, 1);
    browser.assert_clean_console("check page");
    browser.screenshot("check");

    // The range picker: a click shows the last hour, and the URL says so.
    browser.click("nav[aria-label='time range'] a[href$='range=1h']");
    browser.wait_for(
        "the 1h view",
        "return document.getElementById('range-shown').dataset.range === '1h';",
        Duration::from_secs(10),
    );
    assert!(browser.url().contains("range=1h"), "{}", browser.url());
    let current = browser.eval("return document.querySelector('nav[aria-label=\"time range\"] a[aria-current]').textContent;");
    assert_eq!(current, "1h");

    // Dragging across the middle half of the timeline zooms to that half hour.
    browser.drag_across("#timeline", 0.25, 0.75);
    browser.wait_for(
        "the zoomed view",
        "return document.getElementById('range-shown').dataset.range === 'custom';",
        Duration::from_secs(10),
    );
    let url = browser.url();
    let param = |name: &str| -> i64 {
        url.split(&format!("{name}="))
            .nth(1)
            .and_then(|v| v.split('&').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {url}"))
    };
    let span = param("to") - param("from");
    assert!(
        (1_700_000..=1_900_000).contains(&span),
        "half of one hour, got {span} ms: {url}"
    );

    // The keyboard alone reaches the range picker: Tab until "24h" has the focus, Enter.
    let mut reached = false;
    for _ in 0..40 {
        browser.press("\u{E004}");
        if browser.eval("return document.activeElement.textContent;") == "24h" {
            reached = true;
            break;
        }
    }
    assert!(reached, "Tab never reached the 24h range link");
    let outline = browser.eval("return getComputedStyle(document.activeElement).outlineStyle;");
    assert_ne!(outline, "none", "the focused link shows where the focus is");
    browser.press("\u{E007}");
    browser.wait_for(
        "the 24h view",
        "return document.getElementById('range-shown').dataset.range === '24h';",
        Duration::from_secs(10),
    );

    // Dragging on the chart zooms too (plotly's own zoom, turned into from/to).
    browser.goto(&format!("{}{CHECK}&range=6h", daemon.base));
    browser.wait_for(
        "the chart",
        "return document.getElementById('duration-chart').dataset.drawn;",
        Duration::from_secs(20),
    );
    browser.drag_across("#duration-chart .nsewdrag", 0.5, 0.9);
    browser.wait_for(
        "the chart zoom",
        "return document.getElementById('range-shown').dataset.range === 'custom';",
        Duration::from_secs(10),
    );
    browser.assert_clean_console("zoomed check page");

    // At phone width nothing needs sideways scrolling.
    browser.resize(390, 844);
    for page in [
        "/",
        &format!("{CHECK}&range=6h"),
        "/graph?expr=probe_check_status",
        "/ingest",
    ] {
        browser.goto(&format!("{}{page}", daemon.base));
        let overflow = browser.eval(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
        );
        assert!(
            overflow.as_i64().is_some_and(|o| o <= 0),
            "{page} is {overflow} px too wide at 390 px"
        );
    }
    browser.screenshot("check-phone");
    daemon.stop();
}

#[test]
fn explorer_completes_names_draws_and_tabulates() {
    let (_env, daemon) = three_hours_daemon();
    // Server side: the table, and a parse error said plainly.
    let page = daemon.get_text("/graph?expr=probe_check_status&range=6h");
    assert!(page.contains("id=\"graph-table\""), "{page}");
    assert!(
        page.contains("probe_check_status{check=&#34;login&#34;"),
        "{page}"
    );
    let bad = daemon.get_text("/graph?expr=sum(");
    assert!(bad.contains("id=\"graph-error\""), "{bad}");

    let Some(browser) = Browser::start("explorer_completes_names_draws_and_tabulates") else {
        daemon.stop();
        return;
    };
    browser.goto(&format!("{}/graph", daemon.base));
    browser.type_into("#expr", "probe_check_d");
    browser.wait_for(
        "completions",
        "const l = document.getElementById('completions');
         return !l.hidden && l.textContent.includes('probe_check_duration_seconds');",
        Duration::from_secs(10),
    );
    // Tab takes the completion; Enter runs the query.
    browser.type_into("#expr", "\u{E004}");
    assert_eq!(
        browser.eval("return document.getElementById('expr').value;"),
        "probe_check_duration_seconds"
    );
    browser.type_into("#expr", "{ch");
    browser.wait_for(
        "label completions",
        "const l = document.getElementById('completions'); return !l.hidden && l.textContent.includes('check');",
        Duration::from_secs(10),
    );
    browser.type_into("#expr", "\u{E004}=\"login\"}\u{E007}");
    let drawn = browser.wait_for(
        "the explorer chart",
        "const c = document.getElementById('graph-chart'); return c && c.dataset.drawn;",
        Duration::from_secs(20),
    );
    assert!(
        drawn
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
            > 0
    );
    assert!(
        browser.url().contains("expr=probe_check_duration_seconds"),
        "{}",
        browser.url()
    );
    let rows = browser.eval("return document.querySelectorAll('#graph-table tbody tr').length;");
    assert_eq!(rows, 1);
    // Hovering shows a time and a value; a click on the legend hides the series.
    browser.hover("#graph-chart .nsewdrag", 0.5);
    let hover = browser.wait_for(
        "the hover label",
        "const h = document.querySelector('#graph-chart .hoverlayer'); return h && h.textContent;",
        Duration::from_secs(10),
    );
    assert!(
        hover.as_str().is_some_and(|t| t.contains(':')),
        "hover shows a time: {hover}"
    );
    browser.click("#graph-chart .legendtoggle");
    browser.wait_for(
        "the series hidden",
        "return document.getElementById('graph-chart').data[0].visible === 'legendonly';",
        Duration::from_secs(10),
    );
    browser.assert_clean_console("explorer");
    browser.screenshot("graph");
    daemon.stop();
}

#[test]
fn ingest_page_shows_rate_latency_and_its_chart() {
    let env = Env::new();
    let daemon = env.start(&[]);
    for n in 0..20 {
        std::fs::write(env.spool().join(format!("r{n}.xml")), result_xml(n)).expect("write");
    }
    daemon.wait_files(20, Duration::from_secs(30));
    let page = daemon.get_text("/ingest");
    assert!(page.contains("id=\"ingest-rate\""), "{page}");
    assert!(page.contains("<th scope=\"col\">p99</th>"), "{page}");
    let minutes = page
        .split("data-minutes=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default()
        .replace("&#34;", "\"");
    let minutes: serde_json::Value = serde_json::from_str(&minutes).expect("minutes json");
    let files: u64 = minutes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m[1].as_u64())
        .sum();
    assert_eq!(files, 20, "{minutes}");
    if let Some(browser) = Browser::start("ingest_page_shows_rate_latency_and_its_chart") {
        browser.goto(&format!("{}/ingest", daemon.base));
        browser.wait_for(
            "the ingest chart",
            "return document.getElementById('ingest-chart').dataset.drawn;",
            Duration::from_secs(20),
        );
        browser.assert_clean_console("ingest page");
        browser.screenshot("ingest");
    }
    daemon.stop();
}

#[test]
fn creating_a_silence_in_the_browser_needs_the_token() {
    let Some(browser) = Browser::start("creating_a_silence_in_the_browser_needs_the_token") else {
        return;
    };
    let env = Env::new();
    let cfg = format!(
        "api_token = \"t0ken\"\n[[spool]]\npath = {:?}\n",
        env.spool().display().to_string()
    );
    let daemon = env.start_with_config(&cfg);
    browser.goto(&format!("{}/alerts", daemon.base));
    browser.type_into("#silence-form [name=matchers]", "probe=\"web\"");
    browser.type_into("#silence-form [name=createdBy]", "ops");
    browser.type_into("#silence-form [name=comment]", "deploy");
    browser.click("#silence-form button[type=submit]");
    let said = browser.wait_for(
        "the refusal",
        "return document.getElementById('silence-result').textContent;",
        Duration::from_secs(10),
    );
    assert!(
        said.as_str()
            .unwrap_or_default()
            .starts_with("Refused (401)"),
        "{said}"
    );
    let silences = daemon.get("/api/v1/silences");
    assert_eq!(silences["data"].as_array().map_or(1, Vec::len), 0);
    // With the token it is created, and the page lists it after reloading.
    browser.type_into("#silence-form [name=token]", "t0ken");
    browser.click("#silence-form button[type=submit]");
    browser.wait_for(
        "the new silence",
        "return document.body.textContent.includes('deploy') && !document.getElementById('silence-result').textContent;",
        Duration::from_secs(10),
    );
    let silences = daemon.get("/api/v1/silences");
    assert_eq!(silences["data"].as_array().map_or(0, Vec::len), 1);
    // The 401 is the only console message (the browser logs the refused request).
    let console = browser.console();
    assert!(
        console.iter().all(|m| m.contains("401")),
        "unexpected console messages: {console:#?}"
    );
    browser.screenshot("alerts");
    daemon.stop();
}
