//! Ships the outbox to the servers: the oldest queued files in batches, gzipped JSON over
//! HTTP(S), to whichever server answers. A file leaves the outbox, and its spool's
//! after-ingest action runs, only once a server answered that it is stored (or stored
//! before, or rejected); anything else keeps it queued and tries again.
//!
//! Delivery rules: a connection error, a timeout or a 5xx → the next server, after a
//! jittered exponential backoff (capped); a refusal of the whole request (401, 403, 400) →
//! one clear log line per distinct error and a long pause, never a busy loop; a rejected
//! item → quarantined (if the spool says so) and reported, and the queue keeps flowing.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use base64::Engine;
use probewatch_web::agent_api::{PROTOCOL, ShipAnswer, ShipBatch, ShipItem};

use super::outbox::{Outbox, Queued, Settled};
use crate::config::Spool;
use crate::ingest::now_ms;
use crate::shutdown::Shutdown;

/// Most content bytes in one request (a lone bigger file still goes alone).
const MAX_BATCH_BYTES: u64 = 8 * 1024 * 1024;

/// Backoff after a failed attempt: from this…
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// …doubling up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The pause after the servers refused a whole request (a wrong token does not fix itself
/// in a second).
const REFUSED_PAUSE: Duration = Duration::from_secs(30);

/// What the shipper needs.
pub struct Shipper {
    /// Server base URLs, tried in turn.
    pub servers: Vec<String>,
    /// This agent's name.
    pub name: String,
    /// Its token.
    pub token: String,
    /// The outbox (the shipper's own connection).
    pub outbox: Outbox,
    /// The spools, for labels, formats and after-ingest actions.
    pub spools: Arc<Vec<Spool>>,
    /// Most files in one request.
    pub max_files: usize,
    /// How long one request may take.
    pub timeout: Duration,
    /// An empty batch is sent this often when idle, so the servers know the agent is there.
    pub heartbeat: Duration,
    /// Rung by the collector when it queued something.
    pub wake: Receiver<()>,
    /// The agent's stop signal.
    pub shutdown: Shutdown,
    /// The agent's metrics.
    pub metrics: Arc<super::metrics::AgentMetrics>,
}

/// Why an attempt failed.
enum Failure {
    /// Try again (next server, after backoff).
    Retry(String),
    /// The server refused the whole request; fix the configuration.
    Refused(String),
}

impl Shipper {
    /// Runs until the stop signal, finishing the request in flight.
    pub fn run(mut self) {
        let client = match reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(self.timeout)
            .user_agent(concat!("probewatch-agent/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(client) => client,
            Err(err) => {
                tracing::error!(error = %err, "cannot build the HTTP client; shipping stopped");
                return;
            }
        };
        let mut server = 0usize;
        let mut backoff = BACKOFF_MIN;
        let mut last_contact: Option<Instant> = None;
        let mut last_refusal = String::new();
        while !self.shutdown.is_triggered() {
            let batch = match self.outbox.next_batch(self.max_files, MAX_BATCH_BYTES) {
                Ok(batch) => batch,
                Err(err) => {
                    tracing::error!(error = %err, "cannot read the outbox; trying again");
                    self.shutdown.sleep(Duration::from_secs(1));
                    continue;
                }
            };
            let heartbeat_due = last_contact.is_none_or(|t| t.elapsed() >= self.heartbeat);
            if batch.is_empty() && !heartbeat_due {
                let wait = self
                    .heartbeat
                    .saturating_sub(last_contact.map_or(Duration::ZERO, |t| t.elapsed()))
                    .min(Duration::from_millis(500));
                match self.wake.recv_timeout(wait) {
                    Ok(()) | Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => {
                        // The collector is gone: only the stop signal ends this loop.
                        self.shutdown.sleep(wait);
                        continue;
                    }
                }
            }
            let url = format!(
                "{}/api/v1/agent/ingest",
                self.servers[server % self.servers.len()].trim_end_matches('/')
            );
            match self.send(&client, &url, &batch) {
                Ok(answer) => {
                    self.metrics.last_contact.set(now_ms() as f64 / 1000.0);
                    backoff = BACKOFF_MIN;
                    last_contact = Some(Instant::now());
                    if !last_refusal.is_empty() {
                        tracing::info!(server = %url, "the server accepts this agent again");
                        last_refusal.clear();
                    }
                    self.settle(&batch, &answer);
                    // What is left besides the files just answered (new ones are counted at
                    // the next request).
                    let left = self.metrics.outbox_files.get() - batch.len() as i64;
                    self.metrics.outbox_files.set(left.max(0));
                    if left <= 0 {
                        self.metrics.outbox_oldest_seconds.set(0.0);
                    }
                }
                Err(Failure::Retry(why)) => {
                    self.metrics.failed("retry");
                    tracing::warn!(
                        server = %url,
                        error = %why,
                        files = batch.len(),
                        "cannot deliver; the files stay in the outbox and go to the next server in {}",
                        humantime::format_duration(backoff)
                    );
                    server += 1;
                    self.shutdown.sleep(jitter(backoff));
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Err(Failure::Refused(why)) => {
                    self.metrics.failed("refused");
                    if why != last_refusal {
                        tracing::error!(
                            server = %url,
                            error = %why,
                            "the server refused this agent's requests; fix the configuration \
                             (name, token, version). Retrying every {}",
                            humantime::format_duration(REFUSED_PAUSE)
                        );
                        last_refusal = why;
                    }
                    server += 1;
                    self.shutdown.sleep(REFUSED_PAUSE);
                }
            }
        }
    }

    /// One request: the batch (possibly empty, a heartbeat) to `url`.
    fn send(
        &self,
        client: &reqwest::blocking::Client,
        url: &str,
        batch: &[Queued],
    ) -> Result<ShipAnswer, Failure> {
        let (backlog, oldest) = self.outbox.backlog().unwrap_or((0, None));
        let oldest_ms = oldest.map_or(0, |t| now_ms().saturating_sub(t).max(0));
        self.metrics
            .outbox_files
            .set(i64::try_from(backlog).unwrap_or(i64::MAX));
        self.metrics
            .outbox_oldest_seconds
            .set(oldest_ms as f64 / 1000.0);
        let body = ShipBatch {
            protocol: PROTOCOL,
            agent: self.name.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            backlog_files: backlog.saturating_sub(batch.len() as u64),
            oldest_file_age_ms: oldest.map_or(0, |t| {
                u64::try_from(now_ms().saturating_sub(t)).unwrap_or(0)
            }),
            items: batch.iter().map(|q| self.item(q)).collect(),
        };
        let json = serde_json::to_vec(&body).map_err(|e| Failure::Retry(e.to_string()))?;
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(json.len() / 4),
            flate2::Compression::fast(),
        );
        gz.write_all(&json)
            .map_err(|e| Failure::Retry(e.to_string()))?;
        let gzipped = gz.finish().map_err(|e| Failure::Retry(e.to_string()))?;
        let response = client
            .post(url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::CONTENT_ENCODING, "gzip")
            .body(gzipped)
            .send()
            .map_err(|e| Failure::Retry(e.to_string()))?;
        let status = response.status();
        let text = response
            .text()
            .map_err(|e| Failure::Retry(format!("reading the answer: {e}")))?;
        if status.is_success() {
            let answer: ShipAnswer = serde_json::from_str(&text)
                .map_err(|e| Failure::Retry(format!("the answer is not the protocol's: {e}")))?;
            if answer.items.len() != batch.len() {
                return Err(Failure::Retry(format!(
                    "the answer has {} items for {} files",
                    answer.items.len(),
                    batch.len()
                )));
            }
            return Ok(answer);
        }
        let why = format!("HTTP {status}: {}", text.trim());
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Err(Failure::Retry(why))
        } else {
            Err(Failure::Refused(why))
        }
    }

    fn item(&self, q: &Queued) -> ShipItem {
        let spool = self.spools.iter().find(|s| *s.name == *q.entry.spool);
        ShipItem {
            spool: q.entry.spool.clone(),
            format: spool.map(|s| s.format.as_str().to_string()),
            labels: spool
                .map(|s| {
                    s.labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            path: String::from_utf8_lossy(&q.entry.path).into_owned(),
            size: q.entry.size,
            mtime_ns: q.entry.mtime_ns,
            inode: q.entry.inode,
            content: q
                .entry
                .content
                .as_ref()
                .map(|c| base64::engine::general_purpose::STANDARD.encode(c)),
        }
    }

    /// Records the servers' answer: the outbox forgets settled files, then each file's
    /// after-ingest action runs (only for the version the server stored: a file rewritten
    /// meanwhile is left for its own turn).
    fn settle(&mut self, batch: &[Queued], answer: &ShipAnswer) {
        let mut done = Vec::with_capacity(batch.len());
        for (q, a) in batch.iter().zip(&answer.items) {
            let path = String::from_utf8_lossy(&q.entry.path);
            match a.result.as_str() {
                "stored" | "duplicate" => {
                    self.metrics.answered(&a.result);
                    tracing::debug!(path = %path, result = %a.result, "delivered");
                    done.push((q, Settled::Stored));
                }
                "rejected" => {
                    self.metrics.answered("rejected");
                    tracing::warn!(
                        spool = %q.entry.spool,
                        reason = a.kind.as_deref().unwrap_or("?"),
                        "rejected {path}: {}",
                        a.reason.as_deref().unwrap_or("(no reason given)")
                    );
                    done.push((q, Settled::Rejected));
                }
                other => {
                    tracing::warn!(path = %path, result = other, "unknown answer for a file; it stays queued");
                }
            }
        }
        // Forget first: a crash between the two leaves a file whose action the next scan
        // does (its row says stored), never a file sent twice for nothing.
        let mut delay = Duration::from_millis(100);
        while let Err(err) = self.outbox.settle(&done) {
            tracing::error!(error = %err, "cannot record delivered files in the outbox; retrying");
            if self.shutdown.sleep(delay) {
                return;
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        for (q, settled) in done {
            let Some(spool) = self.spools.iter().find(|s| *s.name == *q.entry.spool) else {
                continue;
            };
            let path = PathBuf::from(std::ffi::OsStr::from_bytes(&q.entry.path));
            if still_the_version(&path, q) {
                let outcome = match settled {
                    Settled::Stored => probewatch_store::Outcome::Ingested,
                    Settled::Rejected => probewatch_store::Outcome::Rejected,
                };
                crate::ingest::after_ingest(spool, &path, outcome);
            }
        }
    }
}

/// Whether the file at `path` is still the version that was shipped (not rewritten since).
pub(crate) fn still_the_version(path: &std::path::Path, q: &Queued) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| {
        m.len() == q.entry.size
            && probewatch_watch::mtime_ns(&m) == q.entry.mtime_ns
            && m.ino() == q.entry.inode
    })
}

/// `d` give or take a quarter, so agents cut off together do not come back in step.
fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let quarter = d / 4;
    let nanos = u64::try_from(quarter.as_nanos()).unwrap_or(u64::MAX).max(1);
    d - quarter + Duration::from_nanos(random % (2 * nanos))
}
