//! Notifications you can see: testing a receiver before a real alert needs it, delivery
//! counts in /metrics, and changing things as a logged-in user instead of pasting a token.

use std::time::Duration;

use serde_json::Value;

use crate::util::{Env, Webhook, receivers_config};
use crate::webdriver::Browser;

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
