//! The operator's day: seeing that notifications go out (and testing a receiver before a
//! real alert needs it), changing things as a logged-in user instead of pasting a token.

use std::time::Duration;

use serde_json::Value;

use crate::util::{Env, Webhook, free_port};
use crate::webdriver::Browser;

/// A config with a working receiver `ops`, a dead one `pager` (nothing listens on its
/// port) and `extra` prepended.
fn receivers_config(env: &Env, hook: &Webhook, extra: &str) -> String {
    format!(
        "{extra}\n[[receiver]]\nname = \"ops\"\nurl = {:?}\n\
         [[receiver]]\nname = \"pager\"\nurl = \"http://127.0.0.1:{}/dead\"\ntimeout = \"2s\"\n\
         [[spool]]\npath = {:?}\n",
        hook.url,
        free_port(),
        env.spool().display().to_string()
    )
}

#[test]
fn a_receiver_can_be_tested_from_the_api_and_its_attempts_are_counted_in_metrics() {
    let env = Env::new();
    let hook = Webhook::start(0);
    let daemon = env.start_with_config(&receivers_config(&env, &hook, "api_token = \"t0ken\""));
    let client = reqwest::blocking::Client::new();
    let test = |name: &str, token: Option<&str>| {
        let mut request = client
            .post(format!("{}/api/v1/receivers/{name}/test", daemon.base))
            .header("content-type", "application/json")
            .body("{}");
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request.send().expect("POST");
        let status = response.status().as_u16();
        (status, response.json::<Value>().unwrap_or(Value::Null))
    };

    let listed = daemon.get("/api/v1/receivers");
    let names: Vec<(&str, &str)> = listed["data"]
        .as_array()
        .expect("receivers")
        .iter()
        .filter_map(|r| Some((r["name"].as_str()?, r["kind"].as_str()?)))
        .collect();
    assert_eq!(
        names,
        [("ops", "webhook"), ("pager", "webhook")],
        "{listed}"
    );

    assert_eq!(
        test("ops", None).0,
        401,
        "a test changes nothing, but it does send"
    );
    assert_eq!(test("ops", Some("wrong")).0, 401);
    let (status, body) = test("nobody", Some("t0ken"));
    assert_eq!(status, 404, "{body}");

    let (status, body) = test("ops", Some("t0ken"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["delivered"], true, "{body}");
    let got = hook.wait_for(1, Duration::from_secs(10));
    assert_eq!(got[0]["receiver"], "ops", "{got:?}");
    assert_eq!(
        got[0]["alerts"][0]["labels"]["alertname"], "ProbewatchTestNotification",
        "{got:?}"
    );
    assert_eq!(got[0]["status"], "firing", "{got:?}");
    assert!(
        got[0]["alerts"][0]["annotations"]["description"]
            .as_str()
            .unwrap_or("")
            .contains("Sent by api"),
        "{got:?}"
    );

    let (status, body) = test("pager", Some("t0ken"));
    assert_eq!(status, 200, "the test ran: {body}");
    assert_eq!(body["data"]["delivered"], false, "{body}");
    let detail = body["data"]["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("/dead") && detail.contains("127.0.0.1"),
        "the answer says why: {body}"
    );

    let metrics = daemon.get_text("/metrics");
    for line in [
        "probewatch_notifications_total{receiver=\"ops\"} 1",
        "probewatch_notifications_failed_total{receiver=\"ops\"} 0",
        "probewatch_notifications_total{receiver=\"pager\"} 1",
        "probewatch_notifications_failed_total{receiver=\"pager\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    // The page lists both configured receivers, with their attempts and a test button,
    // although no alert ever queued a notification.
    let page = daemon.get_text("/notifications");
    for needle in [
        "data-receiver=\"ops\"",
        "data-receiver=\"pager\"",
        "<td>1 (1)</td>",
        "id=\"api-token\"",
    ] {
        assert!(page.contains(needle), "{needle} in the page:\n{page}");
    }
    // In a browser: the button sends, and the page says what the receiver answered.
    if let Some(browser) = Browser::start("a_receiver_can_be_tested") {
        browser.goto(&format!("{}/notifications", daemon.base));
        browser.type_into("#api-token", "t0ken");
        browser.click("button.send-test[data-receiver='ops']");
        let said = browser.wait_for(
            "the test's outcome",
            "const t = document.getElementById('test-result').textContent; \
             return t.includes('took the test') ? t : null;",
            Duration::from_secs(20),
        );
        assert!(said.as_str().unwrap_or("").contains("ops"), "{said}");
        browser.click("button.send-test[data-receiver='pager']");
        let said = browser.wait_for(
            "the failed test's outcome",
            "const t = document.getElementById('test-result').textContent; \
             return t.includes('did not take') ? t : null;",
            Duration::from_secs(20),
        );
        assert!(said.as_str().unwrap_or("").contains("pager"), "{said}");
        browser.assert_clean_console("notifications page");
        hook.wait_for(2, Duration::from_secs(10));
    }
    daemon.stop();
}

#[test]
fn a_logged_in_user_changes_things_without_a_token_but_never_through_a_plain_form() {
    let env = Env::new();
    let hook = Webhook::start(0);
    let password_file = env.dir.path().join("ui-password");
    std::fs::write(&password_file, "correct horse\n").expect("password");
    let access = format!(
        "[access]\nusername = \"ops\"\npassword_file = {:?}",
        password_file.display().to_string()
    );
    let daemon = env.start_with_config(&receivers_config(&env, &hook, &access));
    let client = reqwest::blocking::Client::new();
    let silence = r#"{"matchers": ["probe=\"web\""], "duration": "1h", "comment": "deploy"}"#;
    let url = format!("{}/api/v1/silences", daemon.base);

    // A form posted from another site carries the browser's basic auth, but can only be
    // urlencoded, multipart or text/plain: refused.
    for content_type in [
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
    ] {
        let forged = client
            .post(&url)
            .basic_auth("ops", Some("correct horse"))
            .header("content-type", content_type)
            .body(silence)
            .send()
            .expect("POST");
        assert_eq!(forged.status().as_u16(), 415, "{content_type}");
    }
    assert!(
        daemon.get_json_as("ops", "correct horse", "/api/v1/silences")["data"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "nothing was created"
    );

    // The page's own script sends JSON: accepted, and the author is the user.
    let created: Value = client
        .post(&url)
        .basic_auth("ops", Some("correct horse"))
        .header("content-type", "application/json")
        .body(silence)
        .send()
        .expect("POST")
        .json()
        .expect("json");
    let id = created["data"]["silenceID"].as_i64().expect("id");
    let listed = daemon.get_json_as("ops", "correct horse", "/api/v1/silences");
    assert_eq!(listed["data"][0]["createdBy"], "ops", "{listed}");

    // Testing a receiver works the same way.
    let tested = client
        .post(format!("{}/api/v1/receivers/ops/test", daemon.base))
        .basic_auth("ops", Some("correct horse"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .expect("POST");
    assert_eq!(tested.status().as_u16(), 200);
    let got = hook.wait_for(1, Duration::from_secs(10));
    assert!(
        got[0]["alerts"][0]["annotations"]["description"]
            .as_str()
            .unwrap_or("")
            .contains("Sent by ops"),
        "{got:?}"
    );

    // Expiring is a DELETE, which no cross-site form can send.
    let expired = client
        .delete(format!("{url}/{id}"))
        .basic_auth("ops", Some("correct horse"))
        .send()
        .expect("DELETE");
    assert_eq!(expired.status().as_u16(), 200);
    // The pages offer no token field to a logged-in user.
    let page = daemon.get_text_as("ops", "correct horse", "/alerts");
    assert!(!page.contains("name=\"token\""), "{page}");
    daemon.stop();
}

/// A result of `probe` on `host` at `at` (Unix seconds) with `checks` (name, status).
fn result_at(probe: &str, host: &str, at: i64, interval: &str, checks: &[(&str, &str)]) -> String {
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
fn an_alert_is_silenced_from_its_row_with_a_preview_and_silenced_alerts_are_hidden_and_marked() {
    let env = Env::new();
    let hook = Webhook::start(0);
    let rules = env.dir.path().join("critical.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: checks\n    rules:\n      - alert: CheckCritical\n        \
         expr: probe_check_status == 2\n",
    )
    .expect("rules");
    let daemon = env.start_with_config(&receivers_config(
        &env,
        &hook,
        &format!(
            "api_token = \"t0ken\"\nevaluation_interval = \"1s\"\nrule_files = [{:?}]",
            rules.display().to_string()
        ),
    ));
    let now = crate::util::epoch_secs();
    for (i, probe) in ["web", "db"].iter().enumerate() {
        crate::util::write_renamed(
            &env.spool().join(format!("{probe}.xml")),
            &result_at(probe, "h1", now + i as i64, "1h", &[("login", "critical")]),
        );
    }
    daemon.wait_until("two firing alerts", Duration::from_secs(30), |d| {
        d.get("/api/v1/alerts")["data"]["alerts"]
            .as_array()
            .is_some_and(|a| a.iter().filter(|x| x["state"] == "firing").count() == 2)
    });
    let page = daemon.get_text("/alerts");
    assert_eq!(page.matches("class=\"silence-this\"").count(), 2, "{page}");
    assert!(
        page.contains("data-matchers=\"alertname=&#34;CheckCritical&#34;")
            || page.contains("data-matchers=\"alertname=&quot;CheckCritical&quot;"),
        "the button carries the alert's labels as matchers: {page}"
    );

    // The preview: which alerts a silence would catch, or why its matchers are wrong.
    let preview =
        daemon.get("/api/v1/silences/preview?matchers=probe%3D%22web%22%0Acheck%3D~%22log.*%22");
    let matched = preview["data"]["alerts"].as_array().expect("alerts");
    assert_eq!(matched.len(), 1, "{preview}");
    assert_eq!(matched[0]["labels"]["probe"], "web");
    let bad = reqwest::blocking::get(format!(
        "{}/api/v1/silences/preview?matchers=probe%3D%3D%22web",
        daemon.base
    ))
    .expect("GET");
    assert_eq!(bad.status().as_u16(), 400);
    assert!(
        bad.text().unwrap_or_default().contains("probe=="),
        "names the matcher"
    );

    // The check page links to its alert, to a silence for it and to the explorer.
    let check = daemon.get_text("/check?probe=web&host=h1&check=login");
    assert!(check.contains("CheckCritical (firing)"), "{check}");
    let silence_link = check
        .split("href=\"")
        .find(|s| s.starts_with("/alerts?silence="))
        .and_then(|s| s.split('"').next())
        .expect("a silence link")
        .replace("&amp;", "&");
    let prefilled = daemon.get_text(&silence_link);
    assert!(
        prefilled
            .contains("probe=&#34;web&#34;\ncheck=&#34;login&#34;\nhost=&#34;h1&#34;</textarea>")
            || prefilled.contains(
                "probe=&quot;web&quot;\ncheck=&quot;login&quot;\nhost=&quot;h1&quot;</textarea>"
            ),
        "{prefilled}"
    );
    assert!(check.contains("/graph?expr=probe_check_status"), "{check}");

    // In a browser: Silence… on the db row, the preview, and creating it.
    if let Some(browser) = Browser::start("an_alert_is_silenced_from_its_row") {
        browser.goto(&format!("{}/alerts", daemon.base));
        browser.click("#alerts tr:has(code) button.silence-this[data-matchers*='probe=\"db\"']");
        let said = browser.wait_for(
            "the preview",
            "const t = document.getElementById('silence-preview').textContent; \
             return t.startsWith('Matches') ? t : null;",
            Duration::from_secs(10),
        );
        assert_eq!(said, "Matches 1 active alert: CheckCritical");
        browser.type_into("#silence-form input[name='createdBy']", "tester");
        browser.type_into("#silence-form input[name='comment']", "db maintenance");
        browser.type_into("#silence-form input[name='token']", "t0ken");
        browser.click("#silence-form button[type='submit']");
        browser.wait_for(
            "the reload with the db alert hidden",
            "const p = document.getElementById('silenced-hidden'); \
             return p && p.textContent.includes('1 silenced alert hidden');",
            Duration::from_secs(10),
        );
        browser.assert_clean_console("alerts page");
    } else {
        let created = reqwest::blocking::Client::new()
            .post(format!("{}/api/v1/silences", daemon.base))
            .bearer_auth("t0ken")
            .body(r#"{"matchers": ["probe=\"db\""], "duration": "1h", "createdBy": "t", "comment": "c"}"#)
            .send()
            .expect("POST");
        assert_eq!(created.status().as_u16(), 200);
    }
    // Hidden by default, like Alertmanager's UI; shown and marked on request.
    let page = daemon.get_text("/alerts");
    assert!(page.contains("1 silenced alert hidden"), "{page}");
    assert_eq!(page.matches("class=\"silence-this\"").count(), 1);
    let all = daemon.get_text("/alerts?silenced=1");
    assert_eq!(all.matches("class=\"silence-this\"").count(), 2);
    assert!(all.contains("silenced by #1"), "{all}");
    daemon.stop();
}

#[test]
fn an_acknowledged_alert_stops_notifying_until_it_resolves_and_the_acknowledgement_is_kept() {
    let env = Env::new();
    let hook = Webhook::start(0);
    let rules = env.dir.path().join("critical.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: checks\n    rules:\n      - alert: CheckCritical\n        \
         expr: probe_check_status == 2\n",
    )
    .expect("rules");
    let daemon = env.start_with_config(&format!(
        "api_token = \"t0ken\"\nevaluation_interval = \"1s\"\nrule_files = [{:?}]\n\
         [[receiver]]\nname = \"ops\"\nurl = {:?}\n\
         [[route]]\nreceiver = \"ops\"\ngroup_by = [\"probe\"]\ngroup_wait = \"0s\"\n\
         group_interval = \"1s\"\nrepeat_interval = \"2s\"\n\
         [[spool]]\npath = {:?}\n",
        rules.display().to_string(),
        hook.url,
        env.spool().display().to_string()
    ));
    let write = |probe: &str, status: &str| {
        crate::util::write_renamed(
            &env.spool()
                .join(format!("{probe}-{}.xml", crate::util::epoch_secs())),
            &result_at(
                probe,
                "h1",
                crate::util::epoch_secs(),
                "1h",
                &[("login", status)],
            ),
        );
    };
    write("web", "critical");
    write("db", "critical");
    let about = |probe: &str| {
        hook.received()
            .iter()
            .filter(|n| n["groupLabels"]["probe"] == probe && n["status"] == "firing")
            .count()
    };
    daemon.wait_until("both notified", Duration::from_secs(30), |_| {
        about("web") >= 1 && about("db") >= 1
    });
    let alerts = daemon.get("/api/v1/alerts");
    let web = alerts["data"]["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .find(|a| a["labels"]["probe"] == "web")
        .expect("the web alert")
        .clone();
    let client = reqwest::blocking::Client::new();
    let ack = |labels: &Value| {
        client
            .post(format!("{}/api/v1/alerts/acknowledge", daemon.base))
            .bearer_auth("t0ken")
            .json(&serde_json::json!({"labels": labels, "comment": "on it", "createdBy": "alice"}))
            .send()
            .expect("POST")
    };
    let mut wrong = web["labels"].clone();
    wrong["probe"] = "nope".into();
    assert_eq!(ack(&wrong).status().as_u16(), 404, "only an active alert");
    assert_eq!(ack(&web["labels"]).status().as_u16(), 200);
    let web_then = about("web");
    let db_then = about("db");
    // The unacknowledged db alert keeps repeating; the acknowledged web alert is quiet.
    daemon.wait_until("db repeats twice", Duration::from_secs(30), |_| {
        about("db") >= db_then + 2
    });
    assert!(
        about("web") <= web_then + 1,
        "at most one in flight when acknowledged"
    );
    let quiet = about("web");
    daemon.wait_until("db repeats again", Duration::from_secs(30), |_| {
        about("db") >= db_then + 3
    });
    assert_eq!(about("web"), quiet, "no repeat while acknowledged");
    // Shown on the alerts page (not hidden like a silence), with who and why.
    let page = daemon.get_text("/alerts");
    assert!(
        page.contains("status-acked") && page.contains("alice: on it"),
        "{page}"
    );
    assert!(!page.contains("silenced alert hidden"), "{page}");

    // web recovers: the acknowledgement ends by itself and stays in the list.
    write("web", "ok");
    daemon.wait_until("the acknowledgement ended", Duration::from_secs(30), |d| {
        let s = d.get("/api/v1/silences");
        s["data"][0]["acknowledgement"] == true && s["data"][0]["status"] == "expired"
    });
    // The alert's history says who acknowledged it, why, and when that ended.
    let page = daemon.get_text("/alerts");
    let history = &page[page.find("id=\"history\"").expect("history")..];
    assert!(
        history.contains("acknowledged by alice: on it")
            && history.contains("acknowledgement ended"),
        "{history}"
    );
    // It fails again: a new problem, notified.
    let before = about("web");
    write("web", "critical");
    daemon.wait_until("web notified again", Duration::from_secs(30), |_| {
        about("web") > before
    });
    // In a browser: Acknowledge… on the db row.
    if let Some(browser) = Browser::start("an_acknowledged_alert") {
        browser.goto(&format!("{}/alerts", daemon.base));
        let db_row = "#alerts tr:has(code) details.ack:has(form[data-labels*='\"probe\":\"db\"'])";
        browser.click(&format!("{db_row} summary"));
        browser.type_into(&format!("{db_row} input[name='comment']"), "looking");
        browser.type_into("#silence-form input[name='token']", "t0ken");
        browser.click(&format!("{db_row} button[type='submit']"));
        browser.wait_for(
            "the db alert acknowledged",
            "return [...document.querySelectorAll('#alerts tr')]
               .some(r => r.textContent.includes('db') && r.querySelector('.status-acked'));",
            Duration::from_secs(10),
        );
        browser.assert_clean_console("alerts page");
    }
    daemon.stop();
}

#[test]
fn a_check_under_maintenance_shows_maintenance_is_not_notified_and_its_time_is_left_out() {
    let env = Env::new();
    let hook = Webhook::start(0);
    let rules = env.dir.path().join("critical.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: checks\n    rules:\n      - alert: CheckCritical\n        \
         expr: probe_check_status == 2\n",
    )
    .expect("rules");
    let now = crate::util::epoch_secs();
    let daemon = env.start_with_config(&format!(
        "evaluation_interval = \"1s\"\nrule_files = [{:?}]\n\
         [[maintenance]]\nname = \"patching\"\nmatchers = ['host=\"db-1\"']\n\
         start = \"{}\"\nend = \"{}\"\ncomment = \"kernel update\"\n\
         [[maintenance]]\nname = \"backups\"\nmatchers = ['probe=\"web\"']\n\
         days = [\"sun\"]\nfrom = \"03:00\"\nto = \"04:00\"\ntime_zone = \"Asia/Shanghai\"\n\
         [[receiver]]\nname = \"ops\"\nurl = {:?}\n\
         [[route]]\nreceiver = \"ops\"\ngroup_by = [\"host\"]\ngroup_wait = \"0s\"\n\
         [[spool]]\npath = {:?}\n",
        rules.display().to_string(),
        now - 3600,
        now + 3600,
        hook.url,
        env.spool().display().to_string()
    ));
    for (host, at) in [("db-1", now - 1800), ("db-1", now - 1), ("web-1", now - 1)] {
        crate::util::write_renamed(
            &env.spool().join(format!("{host}-{at}.xml")),
            &result_at("app", host, at, "1h", &[("login", "critical")]),
        );
    }
    daemon.wait_files(3, Duration::from_secs(30));
    // Only web-1 is notified; db-1 is expected down.
    let got = hook.wait_for(1, Duration::from_secs(30));
    assert_eq!(got[0]["groupLabels"]["host"], "web-1", "{got:?}");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        hook.received()
            .iter()
            .all(|n| n["groupLabels"]["host"] != "db-1"),
        "{:?}",
        hook.received()
    );
    // MAINTENANCE, not a problem.
    let checks = daemon.get("/api/v1/checks?status=maintenance");
    assert_eq!(
        checks["checks"].as_array().map(Vec::len),
        Some(1),
        "{checks}"
    );
    assert_eq!(checks["checks"][0]["host"], "db-1");
    assert_eq!(
        daemon.get("/api/v1/checks?status=problem")["checks"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "only web-1 is a problem"
    );
    let overview = daemon.get_text("/");
    assert!(overview.contains("1 maintenance"), "{overview}");
    // The alert page hides it like a silenced one, and says why when asked.
    let alerts = daemon.get_text("/alerts?silenced=1");
    assert!(
        alerts.contains("maintenance &#34;patching&#34;")
            || alerts.contains("maintenance &quot;patching&quot;"),
        "{alerts}"
    );
    // The check page says so, and its availability leaves the window's time out.
    let check = daemon.get_text("/check?probe=app&host=db-1&check=login&range=1h");
    assert!(
        check.contains("Under maintenance: <bdi>patching: kernel update</bdi>"),
        "{check}"
    );
    let availability = &check[check
        .find("id=\"availability-title\"")
        .expect("availability")..];
    let availability = &availability[..availability.find("</section>").expect("end")];
    assert!(
        availability.contains("status-maintenance") && !availability.contains("status-critical"),
        "the critical time was all maintenance: {availability}"
    );
    // The windows over the API.
    let windows = daemon.get("/api/v1/maintenance");
    assert_eq!(windows["data"][0]["name"], "patching");
    assert_eq!(windows["data"][0]["active"], true);
    assert_eq!(windows["data"][1]["name"], "backups");
    assert!(
        windows["data"][1]["nextStart"]
            .as_str()
            .is_some_and(|t| t.ends_with("T19:00:00Z")),
        "03:00 in Shanghai is 19:00 UTC: {windows}"
    );
    daemon.stop();

    // A window that cannot be understood stops the start, naming it.
    let config = env.dir.path().join("bad.toml");
    std::fs::write(
        &config,
        format!(
            "[[maintenance]]\nname = \"weekend\"\nmatchers = ['host=\"a\"']\ndays = [\"caturday\"]\n\
             from = \"01:00\"\nto = \"02:00\"\n[[spool]]\npath = {:?}\n",
            env.spool().display().to_string()
        ),
    )
    .expect("config");
    let out = std::process::Command::new(crate::util::BIN)
        .args(["run", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(env.data())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("weekend") && stderr.contains("caturday"),
        "{stderr}"
    );
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
fn a_host_down_alert_inhibits_its_checks_alerts_and_no_other_host() {
    let env = Env::new();
    let hook = Webhook::start(0);
    let rules = env.dir.path().join("hosts.yml");
    std::fs::write(
        &rules,
        r#"groups:
  - name: hosts
    rules:
      - alert: HostDown
        expr: probe_check_status{check="ping"} == 2
      - alert: CheckCritical
        expr: probe_check_status{check!="ping"} == 2
        for: 3s
"#,
    )
    .expect("rules");
    let daemon = env.start_with_config(&format!(
        "evaluation_interval = \"1s\"\nrule_files = [{:?}]\n\
         [[inhibit]]\nsource_matchers = ['alertname=\"HostDown\"']\n\
         target_matchers = ['alertname=\"CheckCritical\"']\nequal = [\"host\"]\n\
         [[receiver]]\nname = \"ops\"\nurl = {:?}\n\
         [[route]]\nreceiver = \"ops\"\ngroup_by = [\"alertname\", \"host\"]\ngroup_wait = \"0s\"\n\
         [[spool]]\npath = {:?}\n",
        rules.display().to_string(),
        hook.url,
        env.spool().display().to_string()
    ));
    let now = crate::util::epoch_secs();
    crate::util::write_renamed(
        &env.spool().join("db.xml"),
        &result_at(
            "app",
            "db-1",
            now,
            "1h",
            &[("ping", "critical"), ("login", "critical")],
        ),
    );
    crate::util::write_renamed(
        &env.spool().join("web.xml"),
        &result_at("app", "web-1", now, "1h", &[("login", "critical")]),
    );
    let got = hook.wait_for(2, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    let sent: std::collections::BTreeSet<(String, String)> = hook
        .received()
        .iter()
        .map(|n| {
            (
                n["groupLabels"]["alertname"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                n["groupLabels"]["host"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        sent,
        [
            ("CheckCritical".to_string(), "web-1".to_string()),
            ("HostDown".to_string(), "db-1".to_string()),
        ]
        .into(),
        "db-1's check alert is muted by its host being down: {got:?}"
    );
    let alerts = daemon.get_text("/alerts?silenced=1");
    assert!(
        alerts.contains("silenced by an inhibiting alert"),
        "{alerts}"
    );
    daemon.stop();
}

#[test]
fn the_cli_reads_a_running_daemon_and_silences_through_it() {
    let env = Env::new();
    let hook = Webhook::start(0);
    let rules = env.dir.path().join("critical.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: checks\n    rules:\n      - alert: CheckCritical\n        \
         expr: probe_check_status == 2\n        annotations:\n          summary: login down\n",
    )
    .expect("rules");
    let daemon = env.start_with_config(&receivers_config(
        &env,
        &hook,
        &format!(
            "api_token = \"t0ken\"\nevaluation_interval = \"1s\"\nrule_files = [{:?}]",
            rules.display().to_string()
        ),
    ));
    let now = crate::util::epoch_secs();
    crate::util::write_renamed(
        &env.spool().join("web.xml"),
        &result_at(
            "web",
            "h1",
            now,
            "1h",
            &[("login", "critical"), ("search", "ok")],
        ),
    );
    daemon.wait_until("firing", Duration::from_secs(30), |d| {
        d.get("/api/v1/alerts")["data"]["alerts"][0]["state"] == "firing"
    });
    let base = daemon.base.clone();
    let cli = |args: &[&str], token: Option<&str>| {
        let mut command = std::process::Command::new(crate::util::BIN);
        command.args(args).args(["--server", &base]);
        command.env_remove("PROBEWATCH_API_TOKEN");
        if let Some(t) = token {
            command.env("PROBEWATCH_API_TOKEN", t);
        }
        let out = command.output().expect("run the CLI");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = cli(&["status"], None);
    assert_eq!(code, Some(0), "{out}{err}");
    for needle in [
        "ready",
        "2: 1 critical, 1 ok",
        "critical  web h1 login",
        "1 firing",
        "ops (webhook)",
    ] {
        assert!(out.contains(needle), "{needle} in:\n{out}");
    }
    let (code, out, _) = cli(&["alerts", "probe=\"web\""], None);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("firing") && out.contains("CheckCritical") && out.contains("login down"),
        "{out}"
    );
    let (_, out, _) = cli(&["alerts", "probe=\"nope\""], None);
    assert!(out.is_empty(), "{out}");

    let add = [
        "silence",
        "add",
        "-m",
        "probe=\"web\"",
        "--duration",
        "1h",
        "--comment",
        "deploy",
    ];
    // Errors exit 2, as every probewatch command's do.
    let (code, _, err) = cli(&add, None);
    assert_eq!(code, Some(2));
    assert!(err.contains("401"), "without the token: {err}");
    let (code, out, err) = cli(&add, Some("t0ken"));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("silence 1 created"), "{out}");
    let (_, out, _) = cli(&["silence", "list"], None);
    assert!(
        out.contains("active") && out.contains("probe=\"web\"") && out.contains("deploy"),
        "{out}"
    );
    let (code, out, _) = cli(&["silence", "expire", "1"], Some("t0ken"));
    assert_eq!((code, out.trim()), (Some(0), "silence 1 expired"));
    let (code, _, _) = cli(&["silence", "expire", "1"], Some("t0ken"));
    assert_eq!(code, Some(1), "already expired");
    daemon.stop();
    // An unreachable server is an error that says so.
    let (code, _, err) = cli(&["status"], None);
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot reach"), "{err}");
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

#[test]
fn the_alerts_page_groups_by_a_label_filters_by_matchers_and_shows_severity() {
    let env = Env::new();
    let hook = Webhook::start(0);
    let rules = env.dir.path().join("sev.yml");
    std::fs::write(
        &rules,
        r#"groups:
  - name: checks
    rules:
      - alert: CheckCritical
        expr: probe_check_status == 2
        labels:
          severity: page
      - alert: CheckWarning
        expr: probe_check_status == 1
        labels:
          severity: ticket
"#,
    )
    .expect("rules");
    let daemon = env.start_with_config(&receivers_config(
        &env,
        &hook,
        &format!(
            "evaluation_interval = \"1s\"\nrule_files = [{:?}]",
            rules.display().to_string()
        ),
    ));
    let now = crate::util::epoch_secs();
    crate::util::write_renamed(
        &env.spool().join("r.xml"),
        &result_at(
            "web",
            "h1",
            now,
            "1h",
            &[
                ("login", "critical"),
                ("search", "warning"),
                ("cart", "critical"),
            ],
        ),
    );
    daemon.wait_until("three alerts", Duration::from_secs(30), |d| {
        d.get("/api/v1/alerts")["data"]["alerts"]
            .as_array()
            .is_some_and(|a| a.len() == 3)
    });
    // Grouped by alertname by default; by any label on request.
    let page = daemon.get_text("/alerts");
    assert!(
        page.contains("alertname=\"CheckCritical\"")
            || page.contains("alertname=&#34;CheckCritical&#34;"),
        "{page}"
    );
    assert!(page.contains("2 firing"), "{page}");
    assert!(
        page.contains("severity severity-critical\">page<")
            && page.contains("severity severity-warning\">ticket<"),
        "{page}"
    );
    let by_check = daemon.get_text("/alerts?group=check");
    assert_eq!(
        by_check.matches("class=\"alert-group\"").count(),
        3,
        "{by_check}"
    );
    // A filter in the URL.
    let filtered = daemon.get_text("/alerts?filter=%7Bseverity%3D%22ticket%22%7D");
    assert_eq!(
        filtered.matches("class=\"silence-this\"").count(),
        1,
        "{filtered}"
    );
    assert!(filtered.contains("CheckWarning"));
    let regex = daemon.get_text("/alerts?filter=check%3D~%22log.*%7Ccart%22");
    assert_eq!(regex.matches("class=\"silence-this\"").count(), 2);
    let bad = daemon.get_text("/alerts?filter=severity%3D%3Dpage");
    assert!(
        bad.contains("class=\"error\"") && bad.contains("severity==page"),
        "{bad}"
    );
    // The history follows the filter too.
    let history = &filtered[filtered.find("id=\"history\"").expect("history")..];
    assert!(
        history.contains("CheckWarning") && !history.contains("CheckCritical"),
        "{history}"
    );
    daemon.stop();
}

#[test]
fn a_public_status_page_and_badges_show_their_groups_and_nothing_private() {
    let env = Env::new();
    let password_file = env.dir.path().join("ui-password");
    std::fs::write(&password_file, "correct horse\n").expect("password");
    let daemon = env.start_with_config(&format!(
        "[access]\nusername = \"ops\"\npassword_file = {:?}\n\
         [status_page]\ntitle = \"Example services\"\n\
         [[status_page.group]]\nname = \"Website\"\nmatchers = ['probe=\"web\"']\n\
         [[status_page.group]]\nname = \"API\"\nmatchers = ['probe=\"api\"']\n\
         [[status_page.announcement]]\ntext = \"Planned work on Sunday\"\n\
         [[status_page.announcement]]\ntext = \"An old notice\"\nuntil = \"2020-01-01T00:00:00Z\"\n\
         [[spool]]\npath = {:?}\n",
        password_file.display().to_string(),
        env.spool().display().to_string()
    ));
    let now = crate::util::epoch_secs();
    for (i, (probe, status)) in [
        ("web", "ok"),
        ("api", "critical"),
        ("secret-db", "critical"),
    ]
    .iter()
    .enumerate()
    {
        // Two results each: uptime is a share of time, which one result alone does not span.
        for at in [now - 120, now - 60] {
            crate::util::write_renamed(
                &env.spool().join(format!("r{i}-{at}.xml")),
                &result_at(probe, "h1", at, "1h", &[("reach", status)]),
            );
        }
    }
    daemon.wait_until("six files", Duration::from_secs(30), |d| {
        d.get_json_as("ops", "correct horse", "/api/v1/stats")["files_ingested"] == 6
    });
    let client = reqwest::blocking::Client::new();
    let get = |path: &str| {
        let r = client
            .get(format!("{}{path}", daemon.base))
            .send()
            .expect("GET");
        let status = r.status().as_u16();
        let kind = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (status, kind, r.text().unwrap_or_default())
    };
    // No login for the status page, its badges and its stylesheet.
    let (status, _, page) = get("/status");
    assert_eq!(status, 200, "{page}");
    for needle in [
        "Example services",
        "Website",
        "operational",
        "API",
        "outage",
        "Planned work on Sunday",
        "Some services are down",
    ] {
        assert!(page.contains(needle), "{needle} in:\n{page}");
    }
    assert!(
        !page.contains("An old notice"),
        "an expired announcement is gone"
    );
    assert!(
        !page.contains("secret"),
        "nothing outside the groups: {page}"
    );
    assert_eq!(page.matches("</rect>").count(), 2 * 90, "90 days per group");
    assert_eq!(get("/static/app.css").0, 200);
    let (status, kind, svg) = get("/badge/Website/status.svg");
    assert_eq!((status, kind.as_str()), (200, "image/svg+xml"));
    assert!(
        svg.contains("operational") && svg.starts_with("<svg"),
        "{svg}"
    );
    let (_, _, svg) = get("/badge/API/uptime.svg?window=7d");
    assert!(svg.contains("uptime 7d") && svg.contains("0.00%"), "{svg}");
    assert_eq!(get("/badge/API/uptime.svg?window=1y").0, 400);
    // Nothing else is public: no badge for a check outside the groups, and the rest
    // still needs the login.
    assert_eq!(get("/badge/secret-db/status.svg").0, 404);
    assert_eq!(get("/badge/Website/anything.svg").0, 404);
    assert_eq!(get("/").0, 401);
    assert_eq!(get("/api/v1/checks").0, 401);
    assert_eq!(get("/static/app.js").0, 401);
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
fn the_check_chart_marks_status_changes_and_alert_changes() {
    let env = Env::new();
    let hook = Webhook::start(0);
    let rules = env.dir.path().join("critical.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: checks\n    rules:\n      - alert: CheckCritical\n        \
         expr: probe_check_status == 2\n",
    )
    .expect("rules");
    let daemon = env.start_with_config(&receivers_config(
        &env,
        &hook,
        &format!(
            "evaluation_interval = \"1s\"\nrule_files = [{:?}]",
            rules.display().to_string()
        ),
    ));
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
