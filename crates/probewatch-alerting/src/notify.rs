//! Delivering queued notifications: each receiver kind, and the outbox lanes that retry with
//! backoff until a receiver accepts or refuses for good. Every attempt is recorded in the
//! store.
//!
//! Each receiver has a lane of its own (a thread), so a receiver that hangs or fails delays
//! nobody else's notifications. An attempt is bounded whole by the receiver's timeout
//! (connect, send, answer; a command's input, run and exit), and reads at most
//! [`ANSWER_PREFIX`] bytes of any answer.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use probewatch_store::{AttemptOutcome, NotificationRow, Store};

use crate::engine::{EngineSnapshot, SnapshotCell};

/// Most bytes of a receiver's answer (an HTTP error body, a command's stderr) that are read
/// and kept: enough to say what went wrong, never a gigabyte.
pub const ANSWER_PREFIX: usize = 4096;

/// `User-Agent` of every request probewatch sends.
pub const USER_AGENT: &str = concat!("probewatch/", env!("CARGO_PKG_VERSION"));

/// How many re-send intervals a firing alert sent to Alertmanager stays valid (its
/// `endsAt`), as in Prometheus: a re-send or two may fail without the alert lapsing.
pub const ALERTMANAGER_VALIDITY: u32 = 4;

/// Why a delivery attempt failed, and whether another attempt can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// A fault that may pass (timeout, refused connection, a 5xx or 429 answer, a command
    /// that failed): retried with backoff.
    Transient(String),
    /// The receiver refused it for good (a 4xx answer, an invalid address, a command that
    /// cannot be started, a receiver no longer configured): recorded as failed, not retried.
    Permanent(String),
}

impl DeliveryError {
    /// The message, whichever kind.
    pub fn message(&self) -> &str {
        match self {
            DeliveryError::Transient(m) | DeliveryError::Permanent(m) => m,
        }
    }
}

/// How a receiver delivers.
#[derive(Debug, Clone)]
pub enum ReceiverKind {
    /// POST the Alertmanager webhook JSON to a URL — or, with a body template, whatever
    /// the template makes of the notification (for any service without a native receiver).
    Webhook {
        /// Where to POST.
        url: String,
        /// The body, from the notification (None: Alertmanager's JSON).
        body: Option<crate::template::Template>,
        /// Extra headers, each value from the notification.
        headers: Vec<(String, crate::template::Template)>,
    },
    /// Push the alerts to an external Alertmanager's API v2 (`POST <url>/api/v2/alerts`),
    /// for teams that already route alerts there.
    Alertmanager {
        /// Alertmanager's base URL, e.g. `http://alertmanager:9093`.
        url: String,
        /// How often every firing alert routed here is sent again (Prometheus: 1 min). A
        /// firing alert is valid for [`ALERTMANAGER_VALIDITY`] re-sends, so Alertmanager keeps
        /// it active exactly as long as probewatch does, and resolves it by itself only if
        /// probewatch stops sending.
        resend_interval: Duration,
    },
    /// Send an email through an SMTP server.
    Email(EmailSettings),
    /// Run a program with the notification JSON on its standard input.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
    },
    /// A chat or paging service in its own format (Slack, Teams, PagerDuty, …).
    Native(crate::native::Native),
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

use probewatch_core::now_ms;

/// The key a receiver deduplicates a notification by: the same for every attempt, from
/// any server, at least once each (the `Idempotency-Key` header, `idempotencyKey` in a
/// webhook's payload, `PROBEWATCH_IDEMPOTENCY_KEY` for a command, an email's Message-ID). One per notification row, which one saved state change of an alert
/// group created.
pub fn idempotency_key(notification_id: i64) -> String {
    format!("probewatch-{notification_id}")
}

/// Delivers one notification; `Ok(detail)` when the receiver accepted it.
pub fn deliver(
    receiver: &Receiver,
    client: &reqwest::blocking::Client,
    payload: &str,
    key: &str,
) -> Result<String, DeliveryError> {
    match &receiver.kind {
        ReceiverKind::Webhook {
            url,
            body: None,
            headers,
        } if headers.is_empty() => {
            let body = match serde_json::from_str::<serde_json::Value>(payload) {
                Ok(serde_json::Value::Object(mut map)) => {
                    map.insert("idempotencyKey".into(), key.into());
                    serde_json::Value::Object(map).to_string()
                }
                _ => payload.to_string(),
            };
            post_json(client, url, body, receiver.timeout, Some(key))
        }
        ReceiverKind::Webhook { url, body, headers } => {
            let p =
                crate::payload::GroupPayload::parse(payload).map_err(DeliveryError::Permanent)?;
            // A template that fails on this notification will fail on every attempt.
            let expand = |t: &crate::template::Template, what: &str| {
                t.expand_notification(&p)
                    .map_err(|e| DeliveryError::Permanent(format!("{what} template: {e}")))
            };
            let text = match body {
                Some(t) => expand(t, "body")?,
                None => payload.to_string(),
            };
            let mut request = crate::native::NativeRequest {
                url: url.clone(),
                headers: Vec::new(),
                body: serde_json::Value::Null,
            };
            for (name, value) in headers {
                request.headers.push((name.clone(), expand(value, name)?));
            }
            post_body(
                client,
                url,
                &request.headers,
                text,
                receiver.timeout,
                Some(key),
            )
        }
        ReceiverKind::Alertmanager {
            url,
            resend_interval,
        } => {
            let valid_until = now_ms().saturating_add(validity_ms(*resend_interval));
            let body = alertmanager_body(payload, valid_until).map_err(DeliveryError::Permanent)?;
            post_json(
                client,
                &alertmanager_endpoint(url),
                body,
                receiver.timeout,
                Some(key),
            )
        }
        ReceiverKind::Email(settings) => send_email(settings, payload, receiver.timeout, key),
        ReceiverKind::Command { argv } => run_command(argv, payload, receiver.timeout, key),
        ReceiverKind::Native(native) => {
            let p =
                crate::payload::GroupPayload::parse(payload).map_err(DeliveryError::Permanent)?;
            let mut said = Vec::new();
            for request in native.requests(&p, now_ms()) {
                said.push(post_native(
                    client,
                    native,
                    &request,
                    receiver.timeout,
                    key,
                )?);
            }
            Ok(said.join("; "))
        }
    }
}

/// POSTs one request of a native receiver: like [`post_json`], and a 2xx answer is read
/// too, because some services (DingTalk, Feishu, WeCom) say a failure in its body. Such a
/// failure is the receiver's configuration (a wrong key or signature): not retried.
fn post_native(
    client: &reqwest::blocking::Client,
    native: &crate::native::Native,
    request: &crate::native::NativeRequest,
    timeout: Duration,
    key: &str,
) -> Result<String, DeliveryError> {
    use DeliveryError::Permanent;
    // Secrets travel in these URLs (a bot token, a webhook key): errors and logs name the
    // host only.
    let shown = reqwest::Url::parse(&request.url).map_or_else(
        |_| "(the configured URL)".to_string(),
        |u| format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("")),
    );
    let mut builder = client
        .post(&request.url)
        .timeout(timeout)
        .header("content-type", "application/json")
        .header("idempotency-key", key);
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    let response = builder.body(request.body.to_string()).send().map_err(|e| {
        let unbuildable = e.is_builder();
        send_failed(
            unbuildable,
            format!("{} {shown}: {}", native.kind(), e.without_url()),
        )
    })?;
    let status = response.status();
    let answer = read_prefix(response);
    if status.is_success() {
        if let Some(error) = native.answer_error(&answer) {
            return Err(Permanent(format!("{} {shown}: {error}", native.kind())));
        }
        return Ok(format!("{} {shown}: {status}", native.kind()));
    }
    Err(refused(
        status,
        format!("{} {shown}: {status} {}", native.kind(), answer.trim()),
    ))
}

/// Subject and plain-text body of an alert email, from a stored notification.
pub fn email_text(payload: &str) -> Result<(String, String), String> {
    let p = crate::payload::GroupPayload::parse(payload)?;
    let mut body = String::new();
    for a in &p.alerts {
        body.push_str(&format!(
            "{} since {}\n",
            a.status.to_uppercase(),
            a.starts_at
        ));
        for (map, title) in [(&a.labels, "Labels"), (&a.annotations, "Annotations")] {
            if !map.is_empty() {
                body.push_str(&format!("  {title}:\n"));
                for (k, v) in map {
                    body.push_str(&format!("    {k} = {v}\n"));
                }
            }
        }
        body.push('\n');
    }
    if !p.external_url.is_empty() {
        body.push_str(&format!("probewatch: {}\n", p.link()));
    }
    Ok((p.title(), body))
}

/// Sends an alert email. Its Message-ID is made from the idempotency key, so every attempt
/// of one notification, from any server, is the same message to mail systems that drop
/// duplicates by Message-ID.
fn send_email(
    settings: &EmailSettings,
    payload: &str,
    timeout: Duration,
    key: &str,
) -> Result<String, DeliveryError> {
    use DeliveryError::{Permanent, Transient};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{Message, SmtpTransport, Transport};
    let (subject, body) = email_text(payload).map_err(Permanent)?;
    let mut message = Message::builder()
        .from(
            settings
                .from
                .parse()
                .map_err(|e| Permanent(format!("from {:?}: {e}", settings.from)))?,
        )
        .subject(subject)
        .message_id(Some(message_id(key, &settings.from)));
    for to in &settings.to {
        message = message.to(to
            .parse()
            .map_err(|e| Permanent(format!("to {to:?}: {e}")))?);
    }
    let message = message
        .body(body)
        .map_err(|e| Permanent(format!("building the email: {e}")))?;
    let builder = match settings.security {
        SmtpSecurity::StartTls => SmtpTransport::starttls_relay(&settings.host),
        SmtpSecurity::Tls => SmtpTransport::relay(&settings.host),
        SmtpSecurity::None => Ok(SmtpTransport::builder_dangerous(&settings.host)),
    }
    .map_err(|e| Permanent(format!("SMTP {}: {e}", settings.host)))?;
    let mut builder = builder.port(settings.port).timeout(Some(timeout));
    if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    let response = builder.build().send(&message).map_err(|e| {
        let text = format!("SMTP {}:{}: {e}", settings.host, settings.port);
        // A 5xx reply (unknown mailbox, relay denied) will not change by itself.
        if e.is_permanent() {
            Permanent(text)
        } else {
            Transient(text)
        }
    })?;
    Ok(format!(
        "SMTP {}:{}: {}",
        settings.host,
        settings.port,
        response.code()
    ))
}

/// `<key@domain>`, the domain taken from the sender's address (`probewatch.invalid` when
/// it has none).
fn message_id(key: &str, from: &str) -> String {
    let domain = from
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('>').trim())
        .filter(|d| !d.is_empty() && !d.contains(['<', '>', ' ']))
        .unwrap_or("probewatch.invalid");
    format!("<{key}@{domain}>")
}

/// POSTs a JSON body; `Ok` on a 2xx answer (whose body is not read), otherwise the status
/// and the start of the answer. A 4xx other than 408 and 429 is the receiver refusing this
/// request for good.
fn post_json(
    client: &reqwest::blocking::Client,
    url: &str,
    body: String,
    timeout: Duration,
    key: Option<&str>,
) -> Result<String, DeliveryError> {
    post_body(client, url, &[], body, timeout, key)
}

/// POSTs `body` with `headers` (JSON unless they give a `content-type`) and the
/// idempotency key; `Ok` on a 2xx answer (whose body is not read), otherwise the status and
/// the start of the answer.
fn post_body(
    client: &reqwest::blocking::Client,
    url: &str,
    headers: &[(String, String)],
    body: String,
    timeout: Duration,
    key: Option<&str>,
) -> Result<String, DeliveryError> {
    let mut request = client.post(url).timeout(timeout);
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        request = request.header("content-type", "application/json");
    }
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request
        .body(body)
        .send()
        .map_err(|e| send_failed(e.is_builder(), format!("POST {url}: {e}")))?;
    let status = response.status();
    if status.is_success() {
        return Ok(format!("POST {url}: {status}"));
    }
    Err(refused(
        status,
        format!("POST {url}: {status} {}", read_prefix(response).trim()),
    ))
}

/// A request that could not be sent: one that cannot even be built never will be; anything
/// else (refused connection, timeout) may pass.
fn send_failed(unbuildable: bool, text: String) -> DeliveryError {
    if unbuildable {
        DeliveryError::Permanent(text)
    } else {
        DeliveryError::Transient(text)
    }
}

/// A non-2xx answer: a 4xx other than 408 and 429 is the receiver refusing this request for
/// good; the rest (5xx, 408, 429) may pass.
fn refused(status: reqwest::StatusCode, text: String) -> DeliveryError {
    if status.is_client_error() && !matches!(status.as_u16(), 408 | 429) {
        DeliveryError::Permanent(text)
    } else {
        DeliveryError::Transient(text)
    }
}

/// The first [`ANSWER_PREFIX`] bytes of `reader` as text (lossy); the rest is not read.
fn read_prefix(reader: impl Read) -> String {
    let mut bytes = Vec::new();
    let _ = reader
        .take(u64::try_from(ANSWER_PREFIX).unwrap_or(u64::MAX))
        .read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    text.chars().take(200).collect()
}

fn alertmanager_endpoint(url: &str) -> String {
    format!("{}/api/v2/alerts", url.trim_end_matches('/'))
}

/// How long a firing alert sent now stays valid in Alertmanager.
fn validity_ms(resend_interval: Duration) -> i64 {
    i64::try_from((resend_interval * ALERTMANAGER_VALIDITY).as_millis()).unwrap_or(i64::MAX)
}

/// Alertmanager's API v2 body (a list of postable alerts) from a webhook payload: a firing
/// alert is valid until `valid_until_ms` (re-sends extend it), a resolved one ends when it
/// resolved.
fn alertmanager_body(payload: &str, valid_until_ms: i64) -> Result<String, String> {
    let valid_until = jiff::Timestamp::from_millisecond(valid_until_ms)
        .map_err(|e| format!("end time {valid_until_ms}: {e}"))?
        .to_string();
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
                    out["endsAt"] = if a["status"] == "resolved" {
                        a["endsAt"].clone()
                    } else {
                        serde_json::Value::String(valid_until.clone())
                    };
                    out
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(serde_json::Value::Array(alerts).to_string())
}

/// Runs a receiver's command with the payload on its standard input. The whole attempt is
/// bounded by `timeout`: the input is written by a helper thread (a program that never reads
/// cannot block delivery), and at the deadline the command's whole process group is killed,
/// so nothing it started is left behind.
/// Runs a command receiver: the payload on stdin, the idempotency key in
/// `PROBEWATCH_IDEMPOTENCY_KEY`.
fn run_command(
    argv: &[String],
    payload: &str,
    timeout: Duration,
    key: &str,
) -> Result<String, DeliveryError> {
    use DeliveryError::{Permanent, Transient};
    use std::os::unix::process::CommandExt;
    let Some((program, args)) = argv.split_first() else {
        return Err(Permanent("empty command".into()));
    };
    let deadline = Instant::now() + timeout;
    let mut child = Command::new(program)
        .args(args)
        .env("PROBEWATCH_IDEMPOTENCY_KEY", key)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| {
            let text = format!("starting {program}: {e}");
            match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    Permanent(text)
                }
                _ => Transient(text),
            }
        })?;
    let group = rustix::process::Pid::from_child(&child);
    if let Some(mut stdin) = child.stdin.take() {
        let payload = payload.to_owned();
        // A program that exits without reading is judged by its exit status, not this write.
        let _ = std::thread::Builder::new()
            .name("pw-notify-stdin".into())
            .spawn(move || {
                let _ = stdin.write_all(payload.as_bytes());
            });
    }
    let (err_tx, err_rx) = std::sync::mpsc::channel();
    if let Some(stderr) = child.stderr.take() {
        let _ = std::thread::Builder::new()
            .name("pw-notify-err".into())
            .spawn(move || {
                let mut stderr = stderr;
                let prefix = read_prefix(&mut stderr);
                let _ = err_tx.send(prefix);
                // Drain the rest so the program never blocks on a full pipe.
                let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            });
    }
    let kill_group = || {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                kill_group();
                let _ = child.wait();
                return Err(Transient(format!(
                    "{program}: timed out after {timeout:?}; killed its process group"
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(Transient(format!("{program}: {e}"))),
        }
    };
    // Whatever it left running in its group goes too.
    kill_group();
    if status.success() {
        return Ok(format!("{program}: {status}"));
    }
    let err = err_rx
        .recv_timeout(Duration::from_millis(200))
        .unwrap_or_default();
    Err(Transient(format!("{program}: {status} {}", err.trim())))
}

/// Delivery attempts per receiver since the start, for `/metrics` (an operator alerts on
/// the alerter with them: `rate(probewatch_notifications_failed_total[5m]) > 0`). Kept
/// across reloads, as counters must be.
#[derive(Debug, Default)]
pub struct DeliveryCounts {
    per_receiver: Mutex<BTreeMap<String, ReceiverCounts>>,
}

/// One receiver's attempts.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ReceiverCounts {
    /// Delivery attempts (each try of a notification, each re-send to an Alertmanager, each
    /// test).
    pub attempts: u64,
    /// Attempts that failed, whether retried or not.
    pub failed: u64,
    /// Seconds the attempts took, together.
    pub seconds: f64,
}

impl DeliveryCounts {
    /// Counts one attempt of `receiver` that took `took` and succeeded or not.
    pub fn record(&self, receiver: &str, took: Duration, ok: bool) {
        let mut map = self.per_receiver.lock().unwrap_or_else(|e| e.into_inner());
        let counts = match map.get_mut(receiver) {
            Some(c) => c,
            None => map.entry(receiver.to_string()).or_default(),
        };
        counts.attempts += 1;
        counts.failed += u64::from(!ok);
        counts.seconds += took.as_secs_f64();
    }

    /// Every receiver that was attempted, by name.
    pub fn snapshot(&self) -> BTreeMap<String, ReceiverCounts> {
        self.per_receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The labels of a test notification's alert: a name no rule uses, so a receiver's
/// routing or filters can tell it apart.
pub const TEST_ALERTNAME: &str = "ProbewatchTestNotification";

/// Sends `receiver` a test notification now, bypassing the outbox (nothing is queued or
/// retried): one firing alert `ProbewatchTestNotification` in the receiver's usual
/// payload. `Ok` is what the receiver answered. Counted in `counts` like any attempt.
pub fn send_test(
    receiver: &Receiver,
    external_url: &str,
    requested_by: &str,
    counts: &DeliveryCounts,
) -> Result<String, DeliveryError> {
    let client = reqwest::blocking::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(receiver.timeout)
        .timeout(receiver.timeout)
        .build()
        .map_err(|e| DeliveryError::Transient(format!("cannot create the HTTP client: {e}")))?;
    let now = now_ms();
    let labels: BTreeMap<String, String> = [
        ("alertname".to_string(), TEST_ALERTNAME.to_string()),
        ("severity".to_string(), "none".to_string()),
    ]
    .into();
    let annotations: BTreeMap<String, String> = [
        (
            "summary".to_string(),
            format!("Test notification for receiver {}", receiver.name),
        ),
        (
            "description".to_string(),
            format!(
                "Sent by {requested_by} from probewatch to check that this receiver works. \
                 No action is needed."
            ),
        ),
    ]
    .into();
    let starts_at =
        jiff::Timestamp::from_millisecond(now).map_or_else(|_| String::new(), |t| t.to_string());
    let alert = crate::payload::AlertPayload {
        status: "firing".into(),
        fingerprint: format!("{now:016x}"),
        labels,
        annotations,
        starts_at,
        ends_at: "0001-01-01T00:00:00Z".into(),
        generator_url: format!("{}/notifications", external_url.trim_end_matches('/')),
    };
    let payload = crate::payload::GroupPayload::new(
        format!("test:{}", receiver.name),
        receiver.name.clone(),
        [("alertname".to_string(), TEST_ALERTNAME.to_string())].into(),
        external_url.to_string(),
        vec![alert],
    );
    let payload = serde_json::to_string(&payload).unwrap_or_default();
    let started = Instant::now();
    let outcome = deliver(
        receiver,
        &client,
        &payload,
        &format!("probewatch-test-{now}"),
    );
    counts.record(&receiver.name, started.elapsed(), outcome.is_ok());
    outcome
}

/// Rung when notifications are queued: every waiting lane wakes and looks.
#[derive(Debug, Default)]
pub struct Doorbell {
    rung: Mutex<u64>,
    wake: Condvar,
}

impl Doorbell {
    /// Wakes every lane.
    pub fn ring(&self) {
        *self.rung.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.wake.notify_all();
    }

    /// Waits until the bell rings after `seen` (the count this lane last saw) or `timeout`
    /// passes; updates `seen`.
    pub fn wait(&self, seen: &mut u64, timeout: Duration) {
        let rung = self.rung.lock().unwrap_or_else(|e| e.into_inner());
        let (rung, _) = self
            .wake
            .wait_timeout_while(rung, timeout, |r| *r == *seen)
            .unwrap_or_else(|e| e.into_inner());
        *seen = *rung;
    }
}

/// Most notifications a lane takes from the outbox at once.
const LANE_BATCH: usize = 100;

/// When a lane stops: at the daemon's stop, or when its outbox is retired (a reload replaced
/// the receivers).
#[derive(Debug, Clone)]
struct LaneStop {
    daemon: Arc<AtomicBool>,
    retired: Arc<AtomicBool>,
}

impl LaneStop {
    fn is_set(&self) -> bool {
        self.daemon.load(Ordering::SeqCst) || self.retired.load(Ordering::SeqCst)
    }
}

/// The running delivery lanes of one set of receivers.
#[derive(Debug)]
pub struct Outbox {
    lanes: Vec<std::thread::JoinHandle<()>>,
    retired: Arc<AtomicBool>,
    doorbell: Arc<Doorbell>,
}

impl Outbox {
    /// Stops these lanes (each after the attempt in hand, which its timeout bounds) and waits
    /// for them, so lanes that replace them never deliver alongside them.
    pub fn retire(self) {
        self.retired.store(true, Ordering::SeqCst);
        self.doorbell.ring();
        self.join();
    }

    /// Waits for the lanes (after the daemon's stop).
    pub fn join(self) {
        for lane in self.lanes {
            let _ = lane.join();
        }
    }
}

/// Starts the outbox: one lane (thread) per receiver, and one that marks notifications for
/// receivers no longer configured as failed. Lanes stop at `stop` or when the outbox is
/// retired, after the attempt in hand (which its timeout bounds). The lane of an
/// Alertmanager receiver also re-sends what `snapshots` shows firing (and recently resolved)
/// every re-send interval.
pub fn start_outbox(
    store: Arc<dyn Store>,
    receivers: Vec<Receiver>,
    snapshots: Arc<SnapshotCell>,
    shared: LaneShared,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Outbox> {
    let LaneShared {
        doorbell,
        counts,
        maintenance,
    } = shared;
    let retired = Arc::new(AtomicBool::new(false));
    let stop = LaneStop {
        daemon: stop,
        retired: retired.clone(),
    };
    let mut lanes = Vec::new();
    let names: Vec<String> = receivers.iter().map(|r| r.name.clone()).collect();
    {
        let (store, doorbell, stop) = (store.clone(), doorbell.clone(), stop.clone());
        lanes.push(
            std::thread::Builder::new()
                .name("pw-notify-none".into())
                .spawn(move || unconfigured_lane(store.as_ref(), &names, &doorbell, &stop))?,
        );
    }
    for (i, receiver) in receivers.into_iter().enumerate() {
        let (store, doorbell, stop) = (store.clone(), doorbell.clone(), stop.clone());
        let (snapshots, counts) = (snapshots.clone(), counts.clone());
        let maintenance = maintenance.clone();
        lanes.push(
            std::thread::Builder::new()
                .name(format!("pw-notify-{i}"))
                .spawn(move || {
                    let lane_parts = LaneParts {
                        store: store.as_ref(),
                        receiver: &receiver,
                        snapshots: &snapshots,
                        doorbell: &doorbell,
                        counts: &counts,
                        maintenance: &maintenance,
                        stop: &stop,
                    };
                    lane(&lane_parts);
                })?,
        );
    }
    Ok(Outbox {
        lanes,
        retired,
        doorbell,
    })
}

/// What every lane of an outbox shares with the daemon.
#[derive(Debug, Clone)]
pub struct LaneShared {
    /// Rung when notifications are queued.
    pub doorbell: Arc<Doorbell>,
    /// Delivery attempts per receiver.
    pub counts: Arc<DeliveryCounts>,
    /// Maintenance windows: the Alertmanager re-send leaves out what they cover.
    pub maintenance: Arc<crate::maintenance::Windows>,
}

/// What one receiver's lane works with.
struct LaneParts<'a> {
    store: &'a dyn Store,
    receiver: &'a Receiver,
    snapshots: &'a SnapshotCell,
    doorbell: &'a Doorbell,
    counts: &'a DeliveryCounts,
    maintenance: &'a crate::maintenance::Windows,
    stop: &'a LaneStop,
}

/// One receiver's lane: delivers its due notifications, one group at a time; for an
/// Alertmanager, also the periodic re-send.
fn lane(parts: &LaneParts<'_>) {
    let LaneParts {
        store,
        receiver,
        snapshots,
        doorbell,
        counts,
        stop,
        ..
    } = *parts;
    let client = match reqwest::blocking::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(receiver.timeout)
        .timeout(receiver.timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(receiver = %receiver.name, error = %e,
                "cannot create the HTTP client; this receiver's notifications stay queued");
            return;
        }
    };
    let mut seen = 0;
    let resend_interval = match receiver.kind {
        ReceiverKind::Alertmanager {
            resend_interval, ..
        } => Some(resend_interval),
        _ => None,
    };
    let mut next_resend = resend_interval.map(|i| Instant::now() + i);
    while !stop.is_set() {
        if let (Some(due), Some(interval)) = (next_resend, resend_interval)
            && Instant::now() >= due
        {
            resend_to_alertmanager(parts, &client, &snapshots.load(), interval);
            next_resend = Some(Instant::now() + interval);
        }
        let due = match store.due_notifications(Some(&receiver.name), now_ms(), LANE_BATCH) {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(receiver = %receiver.name, error = %e,
                    "reading the notification outbox failed");
                Vec::new()
            }
        };
        // Notifications of one group that are due together go out as one.
        let mut groups: Vec<Vec<&NotificationRow>> = Vec::new();
        for n in &due {
            match groups.iter_mut().find(|g| g[0].group_key == n.group_key) {
                Some(g) => g.push(n),
                None => groups.push(vec![n]),
            }
        }
        for group in &groups {
            if stop.is_set() {
                return;
            }
            attempt(store, receiver, &client, group, counts);
        }
        if due.len() < LANE_BATCH {
            doorbell.wait(&mut seen, Duration::from_millis(500));
        }
    }
}

/// Sends an Alertmanager everything the snapshot shows firing or recently resolved for this
/// receiver. A failure is logged; the next re-send (or the alert's outbox notification)
/// tries again, and alerts stay valid for [`ALERTMANAGER_VALIDITY`] intervals meanwhile.
fn resend_to_alertmanager(
    parts: &LaneParts<'_>,
    client: &reqwest::blocking::Client,
    snapshot: &EngineSnapshot,
    interval: Duration,
) {
    let (store, receiver) = (parts.store, parts.receiver);
    let ReceiverKind::Alertmanager { url, .. } = &receiver.kind else {
        return;
    };
    let now = now_ms();
    let silences = match store.silences() {
        Ok(rows) => {
            let mut silences = crate::silence::active_silences(&rows, now);
            silences.extend(parts.maintenance.active_silences(now));
            silences
        }
        Err(e) => {
            tracing::error!(receiver = %receiver.name, error = %e,
                "reading silences failed; re-send to Alertmanager skipped");
            return;
        }
    };
    let alerts =
        snapshot.alertmanager_alerts(&receiver.name, now, validity_ms(interval), &silences);
    if alerts.is_empty() {
        return;
    }
    let count = alerts.len();
    let body = serde_json::Value::Array(alerts).to_string();
    let started = Instant::now();
    let sent = post_json(
        client,
        &alertmanager_endpoint(url),
        body,
        receiver.timeout,
        None,
    );
    parts
        .counts
        .record(&receiver.name, started.elapsed(), sent.is_ok());
    match sent {
        Ok(_) => tracing::debug!(receiver = %receiver.name, alerts = count, "alerts re-sent"),
        Err(e) => tracing::warn!(receiver = %receiver.name, alerts = count, error = %e.message(),
            "re-sending alerts to Alertmanager failed; trying again at the next interval"),
    }
}

/// Marks the due notifications of receivers that are not configured (any more) as failed:
/// no attempt can ever deliver them.
fn unconfigured_lane(store: &dyn Store, names: &[String], doorbell: &Doorbell, stop: &LaneStop) {
    let mut seen = 0;
    while !stop.is_set() {
        let due = store
            .due_notifications(None, now_ms(), 1000)
            .unwrap_or_default();
        for n in due.iter().filter(|n| !names.contains(&n.receiver)) {
            let detail = format!("receiver {:?} is not configured", n.receiver);
            tracing::warn!(id = n.id, receiver = %n.receiver, "notification failed: {detail}");
            if let Err(e) = store.record_attempt(n.id, now_ms(), &detail, AttemptOutcome::Failed) {
                tracing::error!(error = %e, id = n.id, "recording a delivery attempt failed");
            }
        }
        doorbell.wait(&mut seen, Duration::from_secs(5));
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
    receiver: &Receiver,
    client: &reqwest::blocking::Client,
    group: &[&NotificationRow],
    counts: &DeliveryCounts,
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
    let key = idempotency_key(n.id);
    let started = Instant::now();
    let delivered = deliver(receiver, client, &payload, &key);
    counts.record(&receiver.name, started.elapsed(), delivered.is_ok());
    let (detail, outcome) = match delivered {
        Ok(detail) => {
            tracing::info!(id = n.id, receiver = %n.receiver, "notification delivered");
            (detail, AttemptOutcome::Delivered)
        }
        Err(DeliveryError::Transient(detail)) => {
            let delay = backoff(n.attempts);
            tracing::warn!(id = n.id, receiver = %n.receiver, error = %detail,
                "notification not delivered; retrying in {}s", delay.as_secs());
            let retry = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            (detail, AttemptOutcome::RetryAt(retry))
        }
        Err(DeliveryError::Permanent(detail)) => {
            tracing::error!(id = n.id, receiver = %n.receiver, error = %detail,
                "notification refused by its receiver; it will not be retried");
            (detail, AttemptOutcome::Failed)
        }
    };
    for row in group {
        if let Err(e) = store.record_attempt(row.id, now, &detail, outcome) {
            tracing::error!(error = %e, id = row.id, "recording a delivery attempt failed");
        }
    }
}
