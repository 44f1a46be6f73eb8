//! The server's side of agents and push clients: who may send (one token per `[[agent]]`,
//! and the hosts it may write for), what a sent file becomes (the same parser and version
//! hash as a spool file), and the durable commit through the ingest writer.
//!
//! Ledger identity of a sent file: path `<agent>:<path on its host>`, spool
//! `<agent>/<spool>`, and the version hash computed here from the bytes, so a batch resent
//! after a lost answer, or to another server, is a duplicate and never a second result.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use probewatch_core::{Format, Labels, ParseLimits, Reject, RejectKind};
use probewatch_store::{FileMeta, IngestItem, ItemContent, ItemResult, Store};
use probewatch_web::agent_api::{
    AgentView, ItemAnswer, PushDoc, RemoteError, RemoteIngest, ShipAnswer, ShipBatch, ShipItem,
};
use sha2::{Digest, Sha256};

use crate::ingest::{HostRule, ParseSettings, RemoteCommits, now_ms, parse_file, too_large};

/// One sender allowed to write results over HTTP: an agent, or a push client.
#[derive(Clone)]
pub struct AgentAuth {
    /// Its name: the default host of its results, and its part of the ledger's paths.
    pub name: Arc<str>,
    /// Its bearer token.
    pub token: String,
    /// Hosts it may write results for (its name among them).
    pub hosts: Vec<String>,
}

impl std::fmt::Debug for AgentAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentAuth")
            .field("name", &self.name)
            .field("token", &"<hidden>")
            .field("hosts", &self.hosts)
            .finish()
    }
}

/// How often an agent's own series (`probewatch_agent_*`) are written at most.
const AGENT_SAMPLE_EVERY_MS: i64 = 10_000;

/// An agent whose oldest undelivered file is older than this is catching up after an
/// outage (`probewatch_agent_draining 1`): its hosts' newest results are still on their way.
const DRAINING_AFTER_MS: u64 = 10_000;

/// How often an offline agent's `probewatch_agent_up 0` is written again, so it stays in
/// instant queries' lookback.
const OFFLINE_REFRESH_MS: i64 = 60_000;

/// What this server has seen of one agent since it started.
#[derive(Debug, Default, Clone)]
struct Seen {
    last_contact_ms: i64,
    version: String,
    backlog_files: u64,
    oldest_file_age_ms: u64,
    stored: u64,
    duplicates: u64,
    rejected: u64,
    last_reject: Option<String>,
    sampled_at_ms: i64,
    draining: bool,
}

/// The daemon's [`RemoteIngest`].
pub struct RemoteIngestor {
    /// Replaced whole by a configuration reload.
    agents: std::sync::RwLock<Arc<Vec<AgentAuth>>>,
    commits: RemoteCommits,
    store: Arc<dyn Store>,
    max_file_bytes: u64,
    clock_skew_tolerance: Duration,
    limits: ParseLimits,
    seen: Mutex<HashMap<Arc<str>, Seen>>,
    /// Whether each tracked agent is online (true) or no server heard from it for
    /// `offline_after` (false), as of the last sweep or contact.
    states: Mutex<HashMap<Arc<str>, bool>>,
    offline_after: Duration,
    /// Set once the first sweep has run: rules wait for it after a start, so an agent that
    /// went away while the servers were down is known offline before any absence rule runs.
    swept: Arc<std::sync::atomic::AtomicBool>,
}

impl RemoteIngestor {
    /// Takes results for `agents`, committing through `commits`.
    pub fn new(
        agents: Vec<AgentAuth>,
        commits: RemoteCommits,
        store: Arc<dyn Store>,
        max_file_bytes: u64,
        clock_skew_tolerance: Duration,
        offline_after: Duration,
        swept: Arc<std::sync::atomic::AtomicBool>,
    ) -> RemoteIngestor {
        RemoteIngestor {
            agents: std::sync::RwLock::new(Arc::new(agents)),
            commits,
            store,
            max_file_bytes,
            clock_skew_tolerance,
            limits: ParseLimits::default(),
            seen: Mutex::default(),
            states: Mutex::default(),
            offline_after,
            swept,
        }
    }

    /// Writes `agent`'s state in one transaction: `probewatch_agent_up` and
    /// `probewatch_agent_draining`, one series per host it writes for (so a rule can leave
    /// out the hosts of an agent that is away or catching up: `unless on (host)`), and
    /// `extra` per-agent series.
    fn write_state(
        &self,
        agent: &AgentAuth,
        up: f64,
        draining: f64,
        extra: &[(&str, f64)],
        at_ms: i64,
    ) {
        let sample = |metric: &str, labels: Labels, value| probewatch_core::SeriesSample {
            metric: metric.to_string(),
            labels: labels.canonical(),
            time_ms: at_ms,
            value,
        };
        let mut samples = Vec::with_capacity(agent.hosts.len() * 2 + extra.len());
        for host in &agent.hosts {
            if let Ok(labels) = Labels::from_pairs([("agent", &*agent.name), ("host", host)]) {
                samples.push(sample("probewatch_agent_up", labels.clone(), up));
                samples.push(sample("probewatch_agent_draining", labels, draining));
            }
        }
        if let Ok(labels) = Labels::from_pairs([("agent", &*agent.name)]) {
            for (metric, value) in extra {
                samples.push(sample(metric, labels.clone(), *value));
            }
        }
        if let Err(err) = self.store.write_samples(&samples) {
            tracing::warn!(agent = %agent.name, error = %err, "cannot write the agent's series");
        }
    }

    /// Decides which agents are online: an agent is tracked once a server heard from it
    /// (its `probewatch_agent_up` series exist), and offline when the newest of them, written
    /// by whichever server it last reached, is 0 or older than `offline_after`. Writes 0 for
    /// an agent that just went offline (and again every minute while it stays so), so rules
    /// and the dashboard see it.
    pub fn sweep(&self, index: &probewatch_store::SeriesIndex) {
        self.sweep_agents(index);
        self.swept.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn sweep_agents(&self, index: &probewatch_store::SeriesIndex) {
        if self.configured().is_empty() {
            return;
        }
        let now = now_ms();
        let source = probewatch_store::StoreSource::new(self.store.as_ref(), index);
        let options = probewatch_promql::QueryOptions {
            lookback_ms: 3_600_000,
            ..probewatch_promql::QueryOptions::default()
        };
        let vector = |text: &str| match probewatch_promql::Query::parse(text)
            .and_then(|q| q.instant(&source, now, &options))
        {
            Ok(probewatch_promql::Value::Vector(samples)) => Ok(samples),
            Ok(_) => Ok(Vec::new()),
            Err(err) => Err(err),
        };
        // Values, and the time each was written (an instant vector carries the evaluation
        // time; `timestamp()` the sample's).
        let (values, times) = match (
            vector("probewatch_agent_up"),
            vector("timestamp(probewatch_agent_up)"),
        ) {
            (Ok(v), Ok(t)) => (v, t),
            (Err(err), _) | (_, Err(err)) => {
                tracing::warn!(error = %err, "cannot read probewatch_agent_up; agents' state unchanged");
                return;
            }
        };
        let after_ms = i64::try_from(self.offline_after.as_millis()).unwrap_or(i64::MAX);
        for agent in self.configured().iter() {
            // The newest sample among the agent's hosts: (written at, value).
            let last = values
                .iter()
                .filter(|v| v.labels.get("agent") == &*agent.name)
                .filter_map(|v| {
                    let host = v.labels.get("host");
                    let at = times.iter().find(|t| {
                        t.labels.get("agent") == &*agent.name && t.labels.get("host") == host
                    })?;
                    Some((at.v as i64, v.v))
                })
                .max_by_key(|(at, _)| *at);
            let Some((at, value)) = last else {
                // Never heard from (or a push client): not tracked.
                self.states
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&agent.name);
                continue;
            };
            let online = value >= 1.0 && now - at <= after_ms;
            let write_zero = if value >= 1.0 {
                !online
            } else {
                now - at > OFFLINE_REFRESH_MS
            };
            let was = self
                .states
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(agent.name.clone(), online);
            if !online && was != Some(false) {
                tracing::warn!(
                    agent = %agent.name,
                    "agent offline: no server heard from it for {}; its checks show as \
                     agent offline, not stale",
                    humantime::format_duration(self.offline_after)
                );
            }
            if write_zero {
                self.write_state(agent, 0.0, 0.0, &[], now);
            }
        }
    }

    /// Hosts of agents that are offline.
    pub fn offline_hosts(&self) -> std::collections::HashSet<String> {
        let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        self.configured()
            .iter()
            .filter(|a| states.get(&a.name) == Some(&false))
            .flat_map(|a| a.hosts.iter().cloned())
            .collect()
    }

    /// How often a calling agent's series are written: often enough that the sweep never
    /// takes a live agent for an offline one.
    fn sample_every_ms(&self) -> i64 {
        let offline_after = i64::try_from(self.offline_after.as_millis()).unwrap_or(i64::MAX);
        AGENT_SAMPLE_EVERY_MS.min(offline_after / 3)
    }

    /// The configured agents now.
    fn configured(&self) -> Arc<Vec<AgentAuth>> {
        self.agents
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes the `[[agent]]` tables of a reloaded configuration: new tokens work at once,
    /// removed ones are refused from the next request.
    pub fn replace_agents(&self, agents: Vec<AgentAuth>) {
        *self.agents.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(agents);
    }

    fn agent(&self, name: &str) -> Option<AgentAuth> {
        self.configured().iter().find(|a| &*a.name == name).cloned()
    }

    /// A sent file as the ledger will hold it.
    fn item(&self, agent: &AgentAuth, sent: &ShipItem) -> IngestItem {
        let rule = HostRule {
            default_host: &agent.name,
            allowed: &agent.hosts,
        };
        let file = |version_hash| FileMeta {
            spool: Arc::from(format!("{}/{}", agent.name, sent.spool)),
            path: format!("{}:{}", agent.name, sent.path).into_bytes(),
            size: sent.size,
            mtime_ns: sent.mtime_ns,
            inode: sent.inode,
            version_hash,
        };
        let refuse = |kind, detail: String| {
            let mut hasher = Sha256::new();
            hasher.update(b"refused\0");
            hasher.update(sent.content.as_deref().unwrap_or("").as_bytes());
            hasher.update(sent.mtime_ns.to_le_bytes());
            IngestItem {
                file: file(hasher.finalize().into()),
                content: ItemContent::Rejected(Reject::new(kind, detail)),
            }
        };
        let format_name = sent.format.as_deref().unwrap_or("xml");
        let Some(format) = Format::from_name(format_name) else {
            return refuse(
                RejectKind::Value,
                format!("format {format_name:?} is unknown to this server"),
            );
        };
        let labels = match Labels::from_pairs(sent.labels.clone()) {
            Ok(labels) => labels,
            Err(err) => {
                return refuse(
                    RejectKind::Value,
                    format!("the agent's spool labels are invalid: {err}"),
                );
            }
        };
        let Some(encoded) = &sent.content else {
            let (hash, content) =
                too_large(sent.size, sent.mtime_ns, sent.inode, self.max_file_bytes);
            return IngestItem {
                file: file(hash),
                content,
            };
        };
        let bytes = match base64::engine::general_purpose::STANDARD.decode(encoded) {
            Ok(bytes) => bytes,
            Err(err) => {
                return refuse(
                    RejectKind::Encoding,
                    format!("content is not base64: {err}"),
                );
            }
        };
        if bytes.len() as u64 > self.max_file_bytes {
            let (hash, content) = too_large(
                bytes.len() as u64,
                sent.mtime_ns,
                sent.inode,
                self.max_file_bytes,
            );
            return IngestItem {
                file: file(hash),
                content,
            };
        }
        let shown = format!("{}:{}", agent.name, sent.path);
        let (hash, content) = parse_file(
            &bytes,
            sent.mtime_ns,
            &ParseSettings {
                format,
                labels: &labels,
                limits: &self.limits,
                clock_skew_tolerance: self.clock_skew_tolerance,
                mapping: None,
                default_host: None,
            },
            Some(&rule),
            &shown,
        );
        IngestItem {
            file: file(hash),
            content,
        }
    }

    /// Commits `items` and says what became of each; updates what is known of `agent`.
    fn commit(
        &self,
        agent: &AgentAuth,
        items: Vec<IngestItem>,
    ) -> Result<Vec<ItemAnswer>, RemoteError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let outcomes: Vec<(Option<Reject>, String)> = items
            .iter()
            .map(|i| {
                let path = String::from_utf8_lossy(&i.file.path).into_owned();
                match &i.content {
                    ItemContent::Rejected(r) => (Some(r.clone()), path),
                    ItemContent::Parsed { .. } => (None, path),
                }
            })
            .collect();
        let summary = self
            .commits
            .commit(items)
            .map_err(RemoteError::Unavailable)?;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let entry = seen.entry(agent.name.clone()).or_default();
        let answers = outcomes
            .into_iter()
            .zip(summary.items)
            .map(|((reject, path), result)| match (reject, result) {
                (Some(reject), _) => {
                    entry.rejected += 1;
                    tracing::warn!(
                        agent = %agent.name,
                        reason = reject.kind.as_str(),
                        "rejected {path}: {reject}"
                    );
                    entry.last_reject = Some(format!("{path}: {reject}"));
                    ItemAnswer {
                        result: "rejected".into(),
                        kind: Some(reject.kind.as_str().into()),
                        reason: Some(reject.to_string()),
                    }
                }
                (None, ItemResult::Stored { .. }) => {
                    entry.stored += 1;
                    ItemAnswer {
                        result: "stored".into(),
                        kind: None,
                        reason: None,
                    }
                }
                (None, ItemResult::Duplicate) => {
                    entry.duplicates += 1;
                    ItemAnswer {
                        result: "duplicate".into(),
                        kind: None,
                        reason: None,
                    }
                }
            })
            .collect();
        Ok(answers)
    }

    /// Notes that `agent` was heard from; now and then writes its own series, so PromQL
    /// (and rules) can see its backlog and whether it is in touch.
    fn contact(&self, agent: &AgentAuth, version: &str, backlog: u64, oldest_ms: u64) {
        let now = now_ms();
        let back = self
            .states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(agent.name.clone(), true)
            == Some(false);
        if back {
            tracing::info!(agent = %agent.name, "agent back online");
        }
        let draining = oldest_ms > DRAINING_AFTER_MS;
        let due = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let entry = seen.entry(agent.name.clone()).or_default();
            entry.last_contact_ms = now;
            if !version.is_empty() {
                entry.version = version.to_string();
            }
            entry.backlog_files = backlog;
            entry.oldest_file_age_ms = oldest_ms;
            let due = back
                || draining != entry.draining
                || now - entry.sampled_at_ms >= self.sample_every_ms();
            entry.draining = draining;
            if due {
                entry.sampled_at_ms = now;
            }
            due
        };
        if due {
            self.write_state(
                agent,
                1.0,
                if draining { 1.0 } else { 0.0 },
                &[
                    ("probewatch_agent_backlog_files", backlog as f64),
                    (
                        "probewatch_agent_oldest_file_age_seconds",
                        oldest_ms as f64 / 1000.0,
                    ),
                ],
                now,
            );
        }
    }
}

impl RemoteIngest for RemoteIngestor {
    fn authenticate(&self, token: &str) -> Option<Arc<str>> {
        // Every token is compared, so the time taken does not say which one came close.
        let mut found = None;
        for agent in self.configured().iter() {
            if probewatch_web::access::same_secret(token, &agent.token) && found.is_none() {
                found = Some(agent.name.clone());
            }
        }
        found
    }

    fn ingest(&self, sender: &str, batch: ShipBatch) -> Result<ShipAnswer, RemoteError> {
        let agent = self
            .agent(sender)
            .ok_or_else(|| RemoteError::Refused(format!("no agent {sender:?} here")))?;
        let items: Vec<IngestItem> = batch.items.iter().map(|i| self.item(&agent, i)).collect();
        let answers = self.commit(&agent, items)?;
        self.contact(
            &agent,
            &batch.agent_version,
            batch.backlog_files,
            batch.oldest_file_age_ms,
        );
        Ok(ShipAnswer { items: answers })
    }

    fn push(&self, sender: &str, doc: PushDoc) -> Result<ItemAnswer, RemoteError> {
        let agent = self
            .agent(sender)
            .ok_or_else(|| RemoteError::Refused(format!("no agent {sender:?} here")))?;
        let content_hash: [u8; 32] = Sha256::digest(&doc.content).into();
        let id = match &doc.idempotency_key {
            Some(key) => format!("key/{key}"),
            None => format!("sha256/{}", hex(&content_hash)),
        };
        let now_ns = now_ms().saturating_mul(1_000_000);
        let sent = ShipItem {
            spool: "push".into(),
            format: doc.format.clone(),
            labels: Default::default(),
            path: format!("push/{id}"),
            size: doc.content.len() as u64,
            mtime_ns: now_ns,
            inode: 0,
            content: Some(base64::engine::general_purpose::STANDARD.encode(&doc.content)),
        };
        let mut item = self.item(&agent, &sent);
        // A pushed document's identity is its key, or its bytes, never the time it arrived:
        // the path carries it, and every version hash of a push is the same.
        item.file.version_hash = Sha256::digest(b"push\0").into();
        let mut answers = self.commit(&agent, vec![item])?;
        answers
            .pop()
            .ok_or_else(|| RemoteError::Unavailable("the commit answered nothing".into()))
    }

    fn offline_hosts(&self) -> std::collections::HashSet<String> {
        RemoteIngestor::offline_hosts(self)
    }

    fn agents(&self) -> Vec<AgentView> {
        let states = self
            .states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        self.configured()
            .iter()
            .map(|agent| {
                let s = seen.get(&agent.name).cloned().unwrap_or_default();
                AgentView {
                    state: match states.get(&agent.name) {
                        Some(true) => "online",
                        Some(false) => "offline",
                        None => "unknown",
                    }
                    .to_string(),
                    name: agent.name.to_string(),
                    hosts: agent.hosts.clone(),
                    last_contact_ms: s.last_contact_ms,
                    version: s.version,
                    backlog_files: s.backlog_files,
                    oldest_file_age_ms: s.oldest_file_age_ms,
                    stored: s.stored,
                    duplicates: s.duplicates,
                    rejected: s.rejected,
                    last_reject: s.last_reject,
                }
            })
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
