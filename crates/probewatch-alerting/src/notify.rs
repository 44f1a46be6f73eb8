//! Delivering queued notifications: each receiver kind, and the outbox loop that retries with
//! backoff until a receiver accepts. Every attempt is recorded in the store.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use probewatch_store::{NotificationRow, Store};

/// How a receiver delivers.
#[derive(Debug, Clone)]
pub enum ReceiverKind {
    /// POST the Alertmanager webhook JSON to a URL.
    Webhook {
        /// Where to POST.
        url: String,
    },
    /// Push the alerts to an external Alertmanager's API v2 (`POST <url>/api/v2/alerts`),
    /// for teams that already route alerts there.
    Alertmanager {
        /// Alertmanager's base URL, e.g. `http://alertmanager:9093`.
        url: String,
    },
    /// Send an email through an SMTP server.
    Email(EmailSettings),
    /// Run a program with the notification JSON on its standard input.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
    },
}

/// How the email receiver talks to its SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required), usually port 587.
    StartTls,
    /// TLS from the first byte, usually port 465.
    Tls,
    /// No encryption: only for a relay on localhost or a trusted network.
    None,
}

/// SMTP settings of an email receiver.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// SMTP server host name.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Transport security.
    pub security: SmtpSecurity,
    /// Login, if the server wants one.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<String>,
    /// Sender address.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
}

/// A configured receiver.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// Name used by routes.
    pub name: String,
    /// How it delivers.
    pub kind: ReceiverKind,
    /// How long one attempt may take.
    pub timeout: Duration,
}

/// Delay before attempt `attempts + 1`: 1 s, doubling, at most 5 minutes.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(8)).min(Duration::from_secs(300))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Delivers one notification; `Ok(detail)` when the receiver accepted it.
pub fn deliver(
    receiver: &Receiver,
    client: &reqwest::blocking::Client,
    payload: &str,
) -> Result<String, String> {
    match &receiver.kind {
        ReceiverKind::Webhook { url } => {
            post_json(client, url, payload.to_string(), receiver.timeout)
        }
        ReceiverKind::Alertmanager { url } => {
            let endpoint = format!("{}/api/v2/alerts", url.trim_end_matches('/'));
            post_json(
                client,
                &endpoint,
                alertmanager_body(payload)?,
                receiver.timeout,
            )
        }
        ReceiverKind::Email(settings) => send_email(settings, payload, receiver.timeout),
        ReceiverKind::Command { argv } => run_command(argv, payload, receiver.timeout),
    }
}

/// Subject and plain-text body of an alert email, from a webhook payload.
pub fn email_text(payload: &str) -> Result<(String, String), String> {
    let v: serde_json::Value =
        serde_json::from_str(payload).map_err(|e| format!("stored payload is not JSON: {e}"))?;
    let alerts = v["alerts"].as_array().cloned().unwrap_or_default();
    let firing = alerts.iter().filter(|a| a["status"] == "firing").count();
    let names: std::collections::BTreeSet<&str> = alerts
        .iter()
        .filter_map(|a| a["labels"]["alertname"].as_str())
        .collect();
    let status = if firing > 0 {
        format!("FIRING:{firing}")
    } else {
        "RESOLVED".to_string()
    };
    let subject = format!(
        "[{status}] {}",
        names.into_iter().collect::<Vec<_>>().join(", ")
    );
    let mut body = String::new();
    for a in &alerts {
        let status = a["status"].as_str().unwrap_or("");
        body.push_str(&format!(
            "{} since {}\n",
            status.to_uppercase(),
            a["startsAt"].as_str().unwrap_or("")
        ));
        for (field, title) in [("labels", "Labels"), ("annotations", "Annotations")] {
            if let Some(map) = a[field].as_object().filter(|m| !m.is_empty()) {
                body.push_str(&format!("  {title}:\n"));
                for (k, v) in map {
                    body.push_str(&format!("    {k} = {}\n", v.as_str().unwrap_or("")));
                }
            }
        }
        body.push('\n');
    }
    if let Some(url) = v["externalURL"].as_str() {
        body.push_str(&format!("probewatch: {url}/alerts\n"));
    }
    Ok((subject, body))
}

fn send_email(
    settings: &EmailSettings,
    payload: &str,
    timeout: Duration,
) -> Result<String, String> {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{Message, SmtpTransport, Transport};
    let (subject, body) = email_text(payload)?;
    let mut message = Message::builder()
        .from(
            settings
                .from
                .parse()
                .map_err(|e| format!("from {:?}: {e}", settings.from))?,
        )
        .subject(subject);
    for to in &settings.to {
        message = message.to(to.parse().map_err(|e| format!("to {to:?}: {e}"))?);
    }
    let message = message
        .body(body)
        .map_err(|e| format!("building the email: {e}"))?;
    let builder = match settings.security {
        SmtpSecurity::StartTls => SmtpTransport::starttls_relay(&settings.host),
        SmtpSecurity::Tls => SmtpTransport::relay(&settings.host),
        SmtpSecurity::None => Ok(SmtpTransport::builder_dangerous(&settings.host)),
    }
    .map_err(|e| format!("SMTP {}: {e}", settings.host))?;
    let mut builder = builder.port(settings.port).timeout(Some(timeout));
    if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    let response = builder
        .build()
        .send(&message)
        .map_err(|e| format!("SMTP {}:{}: {e}", settings.host, settings.port))?;
    Ok(format!(
        "SMTP {}:{}: {}",
        settings.host,
        settings.port,
        response.code()
    ))
}

/// POSTs a JSON body; `Ok` on a 2xx answer, otherwise the status and the start of the body.
fn post_json(
    client: &reqwest::blocking::Client,
    url: &str,
    body: String,
    timeout: Duration,
) -> Result<String, String> {
    let response = client
        .post(url)
        .timeout(timeout)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = response.status();
    if status.is_success() {
        return Ok(format!("POST {url}: {status}"));
    }
    let answer: String = response
        .text()
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    Err(format!("POST {url}: {status} {answer}"))
}

/// Alertmanager's API v2 body (a list of postable alerts) from a webhook payload: a firing
/// alert carries no end, a resolved one ends when it resolved.
fn alertmanager_body(payload: &str) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_str(payload).map_err(|e| format!("stored payload is not JSON: {e}"))?;
    let alerts: Vec<serde_json::Value> = v["alerts"]
        .as_array()
        .map(|alerts| {
            alerts
                .iter()
                .map(|a| {
                    let mut out = serde_json::json!({
                        "labels": a["labels"],
                        "annotations": a["annotations"],
                        "startsAt": a["startsAt"],
                        "generatorURL": a["generatorURL"],
                    });
                    if a["status"] == "resolved" {
                        out["endsAt"] = a["endsAt"].clone();
                    }
                    out
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(serde_json::Value::Array(alerts).to_string())
}

fn run_command(argv: &[String], payload: &str, timeout: Duration) -> Result<String, String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("empty command".into());
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A program that exits without reading is judged by its exit status, not this write.
        let _ = stdin.write_all(payload.as_bytes());
    }
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(format!("{program}: {status}")),
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
                }
                let err: String = err.chars().take(200).collect();
                return Err(format!("{program}: {status} {}", err.trim()));
            }
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program}: timed out after {timeout:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("{program}: {e}")),
        }
    }
}

/// The outbox loop: delivers due notifications until `stop`; `wake` cuts the wait short
/// when new ones are queued.
pub fn run_outbox(
    store: Arc<dyn Store>,
    receivers: Vec<Receiver>,
    wake: std::sync::mpsc::Receiver<()>,
    stop: Arc<AtomicBool>,
) {
    if receivers.is_empty() {
        // Nothing can be delivered; do not pay for an HTTP client (a runtime thread and the
        // TLS roots) in memory. Queued notifications wait for a configured receiver.
        while !stop.load(Ordering::SeqCst) {
            let _ = wake.recv_timeout(Duration::from_millis(500));
        }
        return;
    }
    let client = match reqwest::blocking::Client::builder().build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot create the HTTP client; notifications stay queued");
            return;
        }
    };
    while !stop.load(Ordering::SeqCst) {
        let due = match store.due_notifications(now_ms(), 100) {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(error = %e, "reading the notification outbox failed");
                Vec::new()
            }
        };
        // Notifications of one receiver and group that are due together go out as one.
        let mut groups: Vec<Vec<&NotificationRow>> = Vec::new();
        for n in &due {
            match groups
                .iter_mut()
                .find(|g| g[0].receiver == n.receiver && g[0].group_key == n.group_key)
            {
                Some(g) => g.push(n),
                None => groups.push(vec![n]),
            }
        }
        for group in &groups {
            attempt(store.as_ref(), &receivers, &client, group);
        }
        if due.len() < 100 {
            let _ = wake.recv_timeout(Duration::from_millis(500));
        }
    }
}

/// One payload from notifications of the same group, oldest first: their alerts, each alert
/// (by fingerprint) in its newest state; the rest from the newest notification.
pub fn merge_payloads(payloads: &[&str]) -> String {
    let parsed: Vec<serde_json::Value> = payloads
        .iter()
        .filter_map(|p| serde_json::from_str(p).ok())
        .collect();
    let Some(mut merged) = parsed.last().cloned() else {
        return payloads.last().map(|p| p.to_string()).unwrap_or_default();
    };
    let mut alerts: Vec<serde_json::Value> = Vec::new();
    for p in &parsed {
        for a in p["alerts"].as_array().into_iter().flatten() {
            match alerts
                .iter_mut()
                .find(|x| x["fingerprint"] == a["fingerprint"])
            {
                Some(existing) => *existing = a.clone(),
                None => alerts.push(a.clone()),
            }
        }
    }
    let firing = alerts.iter().any(|a| a["status"] == "firing");
    merged["status"] = serde_json::json!(if firing { "firing" } else { "resolved" });
    for (field, common) in [
        ("labels", "commonLabels"),
        ("annotations", "commonAnnotations"),
    ] {
        let maps: Vec<&serde_json::Map<String, serde_json::Value>> =
            alerts.iter().filter_map(|a| a[field].as_object()).collect();
        let shared: serde_json::Map<String, serde_json::Value> = maps
            .first()
            .map(|first| {
                first
                    .iter()
                    .filter(|(k, v)| maps.iter().all(|m| m.get(*k) == Some(*v)))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        merged[common] = serde_json::Value::Object(shared);
    }
    merged["alerts"] = serde_json::Value::Array(alerts);
    merged.to_string()
}

fn attempt(
    store: &dyn Store,
    receivers: &[Receiver],
    client: &reqwest::blocking::Client,
    group: &[&NotificationRow],
) {
    let Some(n) = group.last() else {
        return;
    };
    let now = now_ms();
    let payload = if group.len() > 1 {
        merge_payloads(&group.iter().map(|g| g.payload.as_str()).collect::<Vec<_>>())
    } else {
        n.payload.clone()
    };
    let outcome = match receivers.iter().find(|r| r.name == n.receiver) {
        Some(receiver) => deliver(receiver, client, &payload),
        None => Err(format!("receiver {:?} is not configured", n.receiver)),
    };
    let (detail, retry) = match outcome {
        Ok(detail) => {
            tracing::info!(id = n.id, receiver = %n.receiver, "notification delivered");
            (detail, None)
        }
        Err(detail) => {
            let delay = backoff(n.attempts);
            tracing::warn!(id = n.id, receiver = %n.receiver, error = %detail,
                "notification not delivered; retrying in {}s", delay.as_secs());
            let retry = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            (detail, Some(retry))
        }
    };
    for row in group {
        if let Err(e) = store.record_attempt(row.id, now, &detail, retry) {
            tracing::error!(error = %e, id = row.id, "recording a delivery attempt failed");
        }
    }
}
