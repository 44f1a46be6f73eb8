//! What keeps an alert quiet, where the alert is: silences from its row with a preview,
//! acknowledgements, maintenance windows, inhibition; and the alerts page at
//! Alertmanager's level (grouping, filters, severity).

use std::time::Duration;

use serde_json::Value;

use crate::util::{Env, Webhook, result_at};
use crate::webdriver::Browser;

#[test]
fn an_alert_is_silenced_from_its_row_with_a_preview_and_silenced_alerts_are_hidden_and_marked() {
    let env = Env::new();
    let hook = Webhook::start(0);
    let rules = crate::util::critical_rule(&env);
    let daemon = crate::util::start_with_rules(&env, &hook, &rules, "api_token = \"t0ken\"");
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
    let rules = crate::util::critical_rule(&env);
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
    let rules = crate::util::critical_rule(&env);
    let now = crate::util::epoch_secs();
    let daemon = env.start_with_config(&format!(
        "evaluation_interval = \"1s\"\nrule_files = [{:?}]\n\
         [[maintenance]]\nname = \"patching\"\nmatchers = ['host=\"db-1\"']\n\
         start = \"{}\"\nend = \"{}\"\ncomment = \"kernel update\"\n\
         [[maintenance]]\nname = \"backups\"\nmatchers = ['probe=\"web\"']\n\
         days = [\"sun\"]\nfrom = \"03:00\"\nto = \"04:00\"\ntime_zone = \"Asia/Shanghai\"\n\
         [[maintenance]]\nname = \"patching-monthly\"\nmatchers = ['probe=\"batch\"']\n\
         cron = \"0 3 1 * *\"\nduration = \"2h\"\ntime_zone = \"Asia/Tokyo\"\n\
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
    assert_eq!(
        windows["data"][1]["schedule"],
        "sun 03:00-04:00 (Asia/Shanghai)"
    );
    assert_eq!(
        windows["data"][2]["schedule"],
        "cron \"0 3 1 * *\" for 2h (Asia/Tokyo)"
    );
    assert!(
        windows["data"][2]["nextStart"]
            .as_str()
            .is_some_and(|t| t.ends_with("T18:00:00Z")),
        "03:00 in Tokyo on the 1st is 18:00 UTC the day before: {windows}"
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
    let stderr = crate::util::refused_start(&env, &config);
    assert!(
        stderr.contains("weekend") && stderr.contains("caturday"),
        "{stderr}"
    );
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
    let daemon = crate::util::start_with_rules(&env, &hook, &rules, "");
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
