//! Native receivers against a local stand-in for each service, which checks the payload
//! shape the service documents and, for DingTalk and Feishu, the request signature.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use serde_json::Value;

use crate::util::{Env, read_request_with_headers};

/// What the stand-in received: (request line, headers, JSON body).
type Received = Arc<Mutex<Vec<(String, BTreeMap<String, String>, Value)>>>;

/// A stand-in for every service on one port. `/ding-bad` answers as DingTalk does to a
/// wrong signature: 200 with an error code.
fn stand_in() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let received: Received = Arc::default();
    let record = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (line, headers, body) = read_request_with_headers(&stream);
            let headers: BTreeMap<String, String> = headers.into_iter().collect();
            let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let answer = if line.contains("/ding-bad") {
                r#"{"errcode":310000,"errmsg":"sign not match"}"#
            } else {
                r#"{"ok":true,"errcode":0,"code":0}"#
            };
            record.lock().expect("lock").push((line, headers, json));
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (base, received)
}

fn hmac_base64(key: &[u8], message: &[u8]) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("key");
    mac.update(message);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn result(status: &str) -> String {
    format!(
        "<probe name=\"web\" host=\"h1\" time=\"{}\" interval=\"1h\">\n  \
         <check name=\"login\" status=\"{status}\">login {status}</check>\n</probe>\n",
        crate::util::epoch_secs()
    )
}

#[test]
fn every_native_receiver_sends_its_services_own_shape_and_signatures_check_out() {
    let env = Env::new();
    let (base, received) = stand_in();
    let rules = env.dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: checks\n    rules:\n      - alert: CheckCritical\n        \
         expr: probe_check_status == 2\n        labels:\n          severity: page\n        \
         annotations:\n          summary: \"{{ $labels.probe }} {{ $labels.check }} is down\"\n",
    )
    .expect("rules");
    let kinds: [(&str, &str); 9] = [
        ("slack", "url = \"{base}/slack\""),
        ("teams", "url = \"{base}/teams\""),
        ("discord", "url = \"{base}/discord\""),
        (
            "telegram",
            "api_url = \"{base}/tg\"\nbot_token = \"123:ABC\"\nchat_id = \"-100\"",
        ),
        (
            "pagerduty",
            "api_url = \"{base}/pd\"\nrouting_key = \"R0utingKey\"",
        ),
        ("opsgenie", "api_url = \"{base}/og\"\napi_key = \"K3y\""),
        (
            "dingtalk",
            "url = \"{base}/ding?access_token=t\"\nsecret = \"SECding\"",
        ),
        ("feishu", "url = \"{base}/feishu\"\nsecret = \"fsecret\""),
        ("wecom", "url = \"{base}/wecom?key=k\""),
    ];
    let mut config = format!(
        "evaluation_interval = \"1s\"\napi_token = \"t0ken\"\nrule_files = [{:?}]\n\
         [[spool]]\npath = {:?}\n",
        rules.display().to_string(),
        env.spool().display().to_string()
    );
    for (kind, settings) in kinds {
        config.push_str(&format!(
            "[[receiver]]\nname = \"{kind}\"\ntype = \"{kind}\"\n{}\n\
             [[route]]\nreceiver = \"{kind}\"\ngroup_wait = \"0s\"\ncontinue = true\n",
            settings.replace("{base}", &base)
        ));
    }
    config.push_str(&format!(
        "[[receiver]]\nname = \"ding-bad\"\ntype = \"dingtalk\"\nurl = \"{base}/ding-bad\"\n"
    ));
    // Anything else: a webhook whose body and headers are templates over the notification.
    config.push_str(&format!(
        r#"[[receiver]]
name = "custom"
url = "{base}/custom"
body_template = '{{"msg": "{{{{ .Status }}}}: {{{{ range .Alerts }}}}{{{{ .Labels.alertname }}}} on {{{{ .Labels.host }}}}; {{{{ end }}}}", "receiver": "{{{{ .Receiver }}}}"}}'
headers = {{ "X-Token" = "s3cret", "X-Status" = "{{{{ .Status | toUpper }}}}" }}
[[route]]
receiver = "custom"
group_wait = "0s"
continue = true
"#
    ));
    let daemon = env.start_with_config(&config);
    crate::util::write_renamed(&env.spool().join("a.xml"), &result("critical"));
    let by_path = |prefix: &str| -> Vec<(String, BTreeMap<String, String>, Value)> {
        received
            .lock()
            .expect("lock")
            .iter()
            .filter(|(line, _, _)| {
                line.split(' ')
                    .nth(1)
                    .is_some_and(|p| p.starts_with(prefix))
            })
            .cloned()
            .collect()
    };
    daemon.wait_until("every service notified", Duration::from_secs(30), |_| {
        [
            "/slack", "/teams", "/discord", "/tg/", "/pd/", "/og/", "/ding?", "/feishu", "/wecom",
            "/custom",
        ]
        .iter()
        .all(|p| !by_path(p).is_empty())
    });
    let first = |prefix: &str| by_path(prefix).remove(0);

    let (_, _, slack) = first("/slack");
    assert!(
        slack["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("[FIRING:1] CheckCritical")),
        "{slack}"
    );
    assert_eq!(slack["attachments"][0]["color"], "#d00000");
    assert!(
        slack["attachments"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("web login is down")),
        "{slack}"
    );

    let (_, _, teams) = first("/teams");
    assert_eq!(teams["type"], "message");
    let card = &teams["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["content"]["type"], "AdaptiveCard");
    assert!(
        card["content"]["body"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("FIRING")),
        "{teams}"
    );
    assert_eq!(card["content"]["actions"][0]["type"], "Action.OpenUrl");

    let (_, _, discord) = first("/discord");
    assert!(
        discord["content"]
            .as_str()
            .is_some_and(|t| t.contains("FIRING")),
        "{discord}"
    );
    assert!(
        discord["embeds"][0]["description"]
            .as_str()
            .is_some_and(|t| t.contains("probe web")),
        "{discord}"
    );
    assert_eq!(
        discord["allowed_mentions"]["parse"],
        serde_json::json!([]),
        "no @everyone from probe text"
    );

    let (line, _, tg) = first("/tg/");
    assert!(line.contains("/tg/bot123:ABC/sendMessage"), "{line}");
    assert_eq!(
        (tg["chat_id"].as_str(), tg["parse_mode"].as_str()),
        (Some("-100"), Some("HTML"))
    );
    assert!(
        tg["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("<b>[FIRING:1] CheckCritical</b>")),
        "{tg}"
    );

    let (line, _, pd) = first("/pd/");
    assert!(line.contains("/pd/v2/enqueue"), "{line}");
    assert_eq!(pd["routing_key"], "R0utingKey");
    assert_eq!(pd["event_action"], "trigger");
    assert_eq!(
        pd["payload"]["severity"], "critical",
        "severity=page is critical: {pd}"
    );
    assert_eq!(pd["payload"]["source"], "h1");
    assert!(
        pd["payload"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("web login is down"))
    );
    let dedup = pd["dedup_key"].as_str().expect("dedup_key").to_string();

    let (line, headers, og) = first("/og/");
    assert!(line.starts_with("POST /og/v2/alerts "), "{line}");
    assert_eq!(
        headers.get("authorization").map(String::as_str),
        Some("GenieKey K3y")
    );
    assert!(
        og["message"]
            .as_str()
            .is_some_and(|m| m.chars().count() <= 130 && m.contains("CheckCritical"))
    );
    assert_eq!(og["priority"], "P1");
    let alias = og["alias"].as_str().expect("alias").to_string();

    // DingTalk: the signature in the query, as DingTalk computes it, within its hour.
    let (line, _, ding) = first("/ding?");
    let query = line
        .split(' ')
        .nth(1)
        .and_then(|p| p.split_once('?'))
        .map(|(_, q)| q)
        .unwrap_or("");
    let params: BTreeMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let ts: i64 = params["timestamp"].parse().expect("timestamp in ms");
    assert!((crate::util::epoch_secs() * 1000 - ts).abs() < 3_600_000);
    assert_eq!(
        params["sign"],
        hmac_base64(b"SECding", format!("{ts}\nSECding").as_bytes())
    );
    assert_eq!(params["access_token"], "t");
    assert_eq!(ding["msgtype"], "markdown");
    assert!(
        ding["markdown"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("FIRING")),
        "{ding}"
    );

    // Feishu: timestamp (seconds, a string) and sign in the body.
    let (_, _, feishu) = first("/feishu");
    let ts: i64 = feishu["timestamp"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("timestamp");
    assert_eq!(
        feishu["sign"],
        hmac_base64(format!("{ts}\nfsecret").as_bytes(), b"")
    );
    assert_eq!(feishu["msg_type"], "text");
    assert!(
        feishu["content"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("FIRING"))
    );

    let (_, _, wecom) = first("/wecom");
    assert_eq!(wecom["msgtype"], "markdown");
    assert!(
        wecom["markdown"]["content"]
            .as_str()
            .is_some_and(|t| t.contains("FIRING") && t.len() <= 4096)
    );

    let (_, headers, custom) = first("/custom");
    assert_eq!(custom["msg"], "firing: CheckCritical on h1; ", "{custom}");
    assert_eq!(custom["receiver"], "custom");
    assert_eq!(headers.get("x-status").map(String::as_str), Some("FIRING"));
    assert_eq!(headers.get("x-token").map(String::as_str), Some("s3cret"));

    // Resolved: PagerDuty resolves the same event, Opsgenie closes the same alias.
    crate::util::write_renamed(&env.spool().join("b.xml"), &result("ok"));
    daemon.wait_until("resolved", Duration::from_secs(30), |_| {
        by_path("/pd/").len() >= 2 && by_path("/og/").len() >= 2 && by_path("/slack").len() >= 2
    });
    let pd = &by_path("/pd/")[1].2;
    assert_eq!(
        (pd["event_action"].as_str(), pd["dedup_key"].as_str()),
        (Some("resolve"), Some(dedup.as_str()))
    );
    let (line, _, _) = &by_path("/og/")[1];
    assert!(
        line.starts_with(&format!(
            "POST /og/v2/alerts/{alias}/close?identifierType=alias"
        )),
        "{line}"
    );
    assert!(
        by_path("/slack")[1].2["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("[RESOLVED]"))
    );

    // A service that answers 200 with an error code failed, and the test button says why.
    let tested: Value = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/receivers/ding-bad/test", daemon.base))
        .bearer_auth("t0ken")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .expect("POST")
        .json()
        .expect("json");
    assert_eq!(tested["data"]["delivered"], false, "{tested}");
    assert!(
        tested["data"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("310000") && d.contains("sign not match")),
        "{tested}"
    );
    // Secrets in URLs stay out of what is shown.
    let telegram_test: Value = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/receivers/telegram/test", daemon.base))
        .bearer_auth("t0ken")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .expect("POST")
        .json()
        .expect("json");
    assert!(
        !telegram_test.to_string().contains("123:ABC"),
        "{telegram_test}"
    );
    daemon.stop();
}
