//! Alerting in the daemon: the `[[receiver]]` / `[[route]]` / `rule_files` configuration,
//! and the two threads: `pw-rules` evaluates rule groups on their interval and as soon as
//! ingest commits a metric a group reads; `pw-notify` delivers the outbox.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use probewatch_alerting::notify::{self, ReceiverKind};
use probewatch_alerting::template::{StoreQuery, TemplateEnv};
use probewatch_alerting::{Engine, EngineConfig, Route, SnapshotCell};
use probewatch_store::{SeriesIndex, Store, StoreSource};
use serde::Deserialize;

/// The alerting configuration as a Prometheus configuration file would say it, for
/// `/api/v1/status/config` (strings are JSON-quoted, which YAML reads as they are).
pub fn prometheus_yaml(config: &AlertingConfig) -> String {
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let mut out = format!(
        "global:\n  evaluation_interval: {}\n",
        probewatch_promql::format_duration_ms(
            i64::try_from(config.evaluation_interval.as_millis()).unwrap_or(i64::MAX)
        )
    );
    let managers: Vec<&str> = alertmanager_urls(config);
    if !managers.is_empty() {
        out.push_str("alerting:\n  alertmanagers:\n");
        for url in managers {
            match reqwest::Url::parse(url) {
                Ok(u) => {
                    let host = u.host_str().unwrap_or_default();
                    let target = match u.port_or_known_default() {
                        Some(port) => format!("{host}:{port}"),
                        None => host.to_string(),
                    };
                    out.push_str(&format!(
                        "    - scheme: {}\n      path_prefix: {}\n      static_configs:\n        - targets: [{}]\n",
                        q(u.scheme()),
                        q(u.path()),
                        q(&target)
                    ));
                }
                Err(_) => out.push_str(&format!("    # unparsable url {}\n", q(url))),
            }
        }
    }
    if !config.rule_files.is_empty() {
        out.push_str("rule_files:\n");
        for f in &config.rule_files {
            out.push_str(&format!("  - {}\n", q(&f.display().to_string())));
        }
    }
    out
}

/// Base URLs of the `alertmanager` receivers.
pub fn alertmanager_urls(config: &AlertingConfig) -> Vec<&str> {
    config
        .receivers
        .iter()
        .filter_map(|r| match &r.kind {
            ReceiverKind::Alertmanager { url, .. } => Some(url.as_str()),
            _ => None,
        })
        .collect()
}

/// A `[[route]]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Receiver name.
    pub receiver: String,
    /// PromQL-style label matchers, e.g. `severity="page"`, all of which must hold.
    #[serde(default)]
    pub matchers: Vec<String>,
    /// Labels that split alerts into separate notifications.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// How often a still-firing alert is sent again (default 4h).
    pub repeat_interval: Option<String>,
    /// Wait before a group's first notification to collect alerts that come together
    /// (default 0s: at once).
    pub group_wait: Option<String>,
    /// Least time between notifications of one group (default 0s).
    pub group_interval: Option<String>,
    /// Keep matching later routes.
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
}

/// A `[[maintenance]]` table: planned time when what its matchers cover is expected down.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceFile {
    /// Its name, shown where it applies.
    pub name: String,
    /// PromQL-style matchers (`host="db-1"`, `probe=~"web.*"`), all of which must hold.
    pub matchers: Vec<String>,
    /// One-off: start (RFC 3339 or Unix seconds).
    pub start: Option<String>,
    /// One-off: end.
    pub end: Option<String>,
    /// Weekly: the weekdays it starts on (`mon` … `sun`; every day when absent).
    #[serde(default)]
    pub days: Vec<String>,
    /// Weekly: local start time, `HH:MM`.
    pub from: Option<String>,
    /// Weekly: local end time, `HH:MM` (the next day when not after `from`).
    pub to: Option<String>,
    /// Cron: a five-field pattern of local start times (`0 2 1 * *`).
    pub cron: Option<String>,
    /// Cron: how long each time lasts (`2h`).
    pub duration: Option<String>,
    /// Weekly and cron: the IANA time zone of the times (default UTC).
    pub time_zone: Option<String>,
    /// Why, for people.
    #[serde(default)]
    pub comment: String,
}

/// An `[[inhibit]]` table, as an Alertmanager inhibit rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitFile {
    /// What the muting alert matches (`alertname="HostDown"`).
    pub source_matchers: Vec<String>,
    /// What the muted alerts match (`severity=~"ticket|page"`).
    pub target_matchers: Vec<String>,
    /// Labels that must have the same value on both (`["host"]`).
    #[serde(default)]
    pub equal: Vec<String>,
}

/// Checks and compiles the `[[inhibit]]` tables.
pub fn resolve_inhibit(
    files: &[InhibitFile],
) -> anyhow::Result<Vec<probewatch_alerting::inhibit::InhibitRule>> {
    files
        .iter()
        .map(|f| {
            probewatch_alerting::inhibit::InhibitRule::from_config(
                &f.source_matchers,
                &f.target_matchers,
                &f.equal,
            )
            .map_err(anyhow::Error::msg)
        })
        .collect()
}

/// Checks and compiles the `[[maintenance]]` tables.
pub fn resolve_maintenance(
    files: &[MaintenanceFile],
) -> anyhow::Result<Vec<probewatch_alerting::maintenance::Window>> {
    let mut out: Vec<probewatch_alerting::maintenance::Window> = Vec::new();
    for m in files {
        if m.name.is_empty() {
            bail!("a [[maintenance]] window has no name");
        }
        if out.iter().any(|w| w.name == m.name) {
            bail!("maintenance window {:?} is defined twice", m.name);
        }
        out.push(
            probewatch_alerting::maintenance::Window::from_config(
                &m.name,
                &m.matchers,
                &probewatch_alerting::maintenance::WhenSpec {
                    start: m.start.as_deref(),
                    end: m.end.as_deref(),
                    days: &m.days,
                    from: m.from.as_deref(),
                    to: m.to.as_deref(),
                    cron: m.cron.as_deref(),
                    duration: m.duration.as_deref(),
                    time_zone: m.time_zone.as_deref(),
                },
                &m.comment,
            )
            .map_err(anyhow::Error::msg)?,
        );
    }
    Ok(out)
}

/// Resolved alerting settings.
#[derive(Debug, Clone, Default)]
pub struct AlertingConfig {
    /// Rule files (globs expanded).
    pub rule_files: Vec<PathBuf>,
    /// Interval of groups that do not set one.
    pub evaluation_interval: Duration,
    /// Receivers.
    pub receivers: Vec<notify::Receiver>,
    /// Routes.
    pub routes: Vec<Route>,
    /// This probewatch's URL for links in notifications.
    pub external_url: String,
    /// Labels added to outgoing alerts and given to templates.
    pub external_labels: std::collections::BTreeMap<String, String>,
    /// Maintenance windows.
    pub maintenance: Vec<probewatch_alerting::maintenance::Window>,
    /// Inhibition rules.
    pub inhibit: Vec<probewatch_alerting::inhibit::InhibitRule>,
}

fn humantime_ms(
    field: &str,
    text: Option<&str>,
    default: &str,
    min: Duration,
) -> anyhow::Result<i64> {
    let d = crate::config::duration(field, text, default, min)?;
    Ok(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Expands `rule_files` entries: a `*`, `?` or `[` in the file name matches files in its
/// directory; other entries are taken as they are (and must exist).
pub fn expand_rule_files(patterns: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for pattern in patterns {
        let path = Path::new(pattern);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.contains(['*', '?', '[']) {
            if !path.is_file() {
                bail!("rule file {pattern} does not exist");
            }
            out.push(path.to_path_buf());
            continue;
        }
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let glob = globset::Glob::new(&name)
            .with_context(|| format!("rule_files pattern {pattern:?}"))?
            .compile_matcher();
        let mut matched: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {} for rule_files", dir.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.file_name().is_some_and(|n| glob.is_match(n)))
            .collect();
        matched.sort();
        out.extend(matched);
    }
    Ok(out)
}

/// Resolves the alerting part of the configuration.
pub fn resolve(
    rule_files: &[String],
    evaluation_interval: Option<&str>,
    external_url: Option<String>,
    external_labels: &std::collections::BTreeMap<String, String>,
    receivers: &[crate::receiver_config::ReceiverFile],
    routes: &[RouteFile],
    listen: std::net::SocketAddr,
) -> anyhow::Result<AlertingConfig> {
    for (name, value) in external_labels {
        let valid = name
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if !valid || name.is_empty() || name.starts_with("__") {
            bail!("external_labels: {name:?} is not a valid label name");
        }
        if value.is_empty() {
            bail!("external_labels: {name:?} has an empty value");
        }
    }
    let mut resolved_receivers = Vec::new();
    let mut send_resolved = std::collections::HashMap::new();
    for r in receivers {
        if resolved_receivers
            .iter()
            .any(|x: &notify::Receiver| x.name == r.name)
        {
            bail!("receiver {:?} is defined twice", r.name);
        }
        send_resolved.insert(r.name.clone(), r.send_resolved.unwrap_or(true));
        resolved_receivers.push(r.resolve()?);
    }
    let mut resolved_routes = Vec::new();
    for r in routes {
        let Some(&resolved) = send_resolved.get(&r.receiver) else {
            bail!(
                "route refers to receiver {:?}, which is not defined",
                r.receiver
            );
        };
        let mut matchers = Vec::new();
        for m in &r.matchers {
            let alternatives = probewatch_promql::parse_selector(&format!("{{{m}}}"))
                .with_context(|| format!("route matcher {m:?}"))?;
            matchers.extend(alternatives.into_iter().flatten());
        }
        resolved_routes.push(Route {
            receiver: r.receiver.clone(),
            matchers,
            group_by: r.group_by.clone(),
            repeat_interval_ms: humantime_ms(
                "repeat_interval",
                r.repeat_interval.as_deref(),
                "4h",
                Duration::from_secs(1),
            )?,
            group_wait_ms: humantime_ms(
                "group_wait",
                r.group_wait.as_deref(),
                "0s",
                Duration::ZERO,
            )?,
            group_interval_ms: humantime_ms(
                "group_interval",
                r.group_interval.as_deref(),
                "0s",
                Duration::ZERO,
            )?,
            send_resolved: resolved,
            continue_matching: r.continue_matching,
        });
    }
    if routes.is_empty() {
        // Without routes, every receiver gets every alert.
        for r in &resolved_receivers {
            resolved_routes.push(Route {
                receiver: r.name.clone(),
                matchers: Vec::new(),
                group_by: vec!["alertname".into()],
                repeat_interval_ms: 4 * 3600 * 1000,
                group_wait_ms: 0,
                group_interval_ms: 0,
                send_resolved: send_resolved.get(&r.name).copied().unwrap_or(true),
                continue_matching: true,
            });
        }
    }
    Ok(AlertingConfig {
        rule_files: expand_rule_files(rule_files)?,
        evaluation_interval: Duration::from_millis(
            u64::try_from(humantime_ms(
                "evaluation_interval",
                evaluation_interval,
                "15s",
                Duration::from_secs(1),
            )?)
            .unwrap_or(15_000),
        ),
        receivers: resolved_receivers,
        routes: resolved_routes,
        external_url: external_url.unwrap_or_else(|| format!("http://{listen}")),
        external_labels: external_labels.clone(),
        maintenance: Vec::new(),
        inhibit: Vec::new(),
    })
}

/// The running alerting threads.
pub struct Alerting {
    /// What the HTTP API and pages see of the engine (published by `pw-rules`).
    pub snapshots: Arc<SnapshotCell>,
    rules_thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    reloads: std::sync::Mutex<SyncSender<RulesReload>>,
    outbox: std::sync::Mutex<Option<notify::Outbox>>,
    /// What `start` (or the last reload) applied.
    applied: std::sync::Mutex<AlertingConfig>,
    store: Arc<dyn Store>,
    query: Arc<StoreQuery>,
    doorbell: Arc<notify::Doorbell>,
    /// Delivery attempts per receiver since the start (for `/metrics` and the pages).
    pub deliveries: Arc<notify::DeliveryCounts>,
    /// The maintenance windows in force (replaced by a reload).
    pub maintenance: Arc<probewatch_alerting::maintenance::Windows>,
    /// The inhibition rules in force (replaced by a reload).
    pub inhibitions: Arc<probewatch_alerting::inhibit::Inhibitions>,
    stop: Arc<AtomicBool>,
}

/// New rules for the rules thread; it answers on `done` once they are in use.
struct RulesReload {
    groups: Vec<probewatch_alerting::rulefile::Group>,
    config: EngineConfig,
    done: std::sync::mpsc::Sender<()>,
}

fn engine_config(config: &AlertingConfig, query: &Arc<StoreQuery>) -> EngineConfig {
    EngineConfig {
        routes: config.routes.clone(),
        external_url: config.external_url.clone(),
        templates: TemplateEnv {
            external_labels: config.external_labels.clone(),
            external_url: config.external_url.clone(),
            query: Some(query.clone()),
        },
    }
}

fn load_groups(
    config: &AlertingConfig,
) -> anyhow::Result<Vec<probewatch_alerting::rulefile::Group>> {
    let default_ms = i64::try_from(config.evaluation_interval.as_millis()).unwrap_or(15_000);
    Ok(probewatch_alerting::rulefile::load(
        &config.rule_files,
        default_ms,
    )?)
}

impl Alerting {
    /// Loads the rules and restores alert state, then starts `pw-rules` and `pw-notify`.
    /// `ingested` receives the metric names of each committed ingest batch.
    #[allow(clippy::too_many_arguments)] // one per part it wires; a struct would only rename them
    pub fn start(
        config: &AlertingConfig,
        store: Arc<dyn Store>,
        index: Arc<SeriesIndex>,
        ingested: Receiver<Vec<String>>,
        caught_up: Box<dyn FnMut() -> bool + Send>,
        stop: Arc<AtomicBool>,
        leadership: Arc<crate::cluster::Leadership>,
        metrics: Arc<crate::telemetry::RuleMetrics>,
    ) -> anyhow::Result<Alerting> {
        let groups = load_groups(config)?;
        let stored = store.alerts().context("reading saved alert state")?;
        let query = Arc::new(StoreQuery {
            store: store.clone(),
            index: index.clone(),
        });
        let engine = Engine::new(groups, engine_config(config, &query), stored);
        let snapshots = Arc::new(SnapshotCell::new(engine.snapshot()));
        let doorbell = Arc::new(notify::Doorbell::default());
        let maintenance = Arc::new(probewatch_alerting::maintenance::Windows::default());
        maintenance.replace(config.maintenance.clone());
        let inhibitions = Arc::new(probewatch_alerting::inhibit::Inhibitions::default());
        inhibitions.replace(config.inhibit.clone());
        let (reload_tx, reload_rx) = std::sync::mpsc::sync_channel(1);
        let rules_thread = {
            let mut rules = Rules {
                engine,
                snapshots: snapshots.clone(),
                store: store.clone(),
                index,
                doorbell: doorbell.clone(),
                leadership,
                leading: false,
                metrics,
                maintenance: maintenance.clone(),
                inhibitions: inhibitions.clone(),
                stale: crate::staleness::StaleSweep::new(config.evaluation_interval),
            };
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("pw-rules".into())
                .stack_size(probewatch_promql::limits::STACK_BYTES)
                .spawn(move || rules.run(ingested, reload_rx, caught_up, stop))?
        };
        let deliveries = Arc::new(notify::DeliveryCounts::default());
        let outbox = notify::start_outbox(
            store.clone(),
            config.receivers.clone(),
            snapshots.clone(),
            notify::LaneShared {
                doorbell: doorbell.clone(),
                counts: deliveries.clone(),
                maintenance: maintenance.clone(),
            },
            stop.clone(),
        )?;
        Ok(Alerting {
            snapshots,
            rules_thread: std::sync::Mutex::new(Some(rules_thread)),
            reloads: std::sync::Mutex::new(reload_tx),
            outbox: std::sync::Mutex::new(Some(outbox)),
            applied: std::sync::Mutex::new(config.clone()),
            store,
            query,
            doorbell,
            deliveries,
            maintenance,
            inhibitions,
            stop,
        })
    }

    /// Applies a reloaded alerting configuration: rule files, routes, receivers. Everything
    /// is checked first; on any error the running rules and receivers stay as they are and
    /// the error says why. Receivers' lanes are replaced only when the receivers changed
    /// (after the old lanes finish the attempt in hand).
    pub fn reload(&self, config: &AlertingConfig) -> anyhow::Result<()> {
        let groups = load_groups(config)?;
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        self.reloads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(RulesReload {
                groups,
                config: engine_config(config, &self.query),
                done: done_tx,
            })
            .context("the rules thread has stopped")?;
        done_rx
            .recv_timeout(Duration::from_secs(120))
            .context("the rules thread did not take the new rules within 2 minutes")?;
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        if format!("{:?}", applied.receivers) != format!("{:?}", config.receivers) {
            let mut outbox = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(old) = outbox.take() {
                old.retire();
            }
            *outbox = Some(
                notify::start_outbox(
                    self.store.clone(),
                    config.receivers.clone(),
                    self.snapshots.clone(),
                    notify::LaneShared {
                        doorbell: self.doorbell.clone(),
                        counts: self.deliveries.clone(),
                        maintenance: self.maintenance.clone(),
                    },
                    self.stop.clone(),
                )
                .context("starting the new receivers' delivery lanes")?,
            );
            tracing::info!(receivers = config.receivers.len(), "receivers replaced");
        }
        self.maintenance.replace(config.maintenance.clone());
        self.inhibitions.replace(config.inhibit.clone());
        *applied = config.clone();
        Ok(())
    }

    /// Waits for the rules thread and the outbox lanes (after `stop` is set).
    pub fn join(&self) {
        let thread = self
            .rules_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        let outbox = self.outbox.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(outbox) = outbox {
            outbox.join();
        }
    }
}

impl probewatch_web::receivers_api::Receivers for Alerting {
    fn list(&self) -> Vec<probewatch_web::receivers_api::ReceiverInfo> {
        let counts = self.deliveries.snapshot();
        let applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        applied
            .receivers
            .iter()
            .map(|r| {
                let c = counts.get(&r.name).copied().unwrap_or_default();
                probewatch_web::receivers_api::ReceiverInfo {
                    name: r.name.clone(),
                    kind: match &r.kind {
                        ReceiverKind::Webhook { .. } => "webhook",
                        ReceiverKind::Alertmanager { .. } => "alertmanager",
                        ReceiverKind::Email(_) => "email",
                        ReceiverKind::Command { .. } => "command",
                        ReceiverKind::Native(n) => n.kind(),
                    }
                    .to_string(),
                    attempts: c.attempts,
                    failed: c.failed,
                }
            })
            .collect()
    }

    fn send_test(&self, name: &str, requested_by: &str) -> Option<Result<String, String>> {
        let (receiver, external_url) = {
            let applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
            let receiver = applied.receivers.iter().find(|r| r.name == name)?.clone();
            (receiver, applied.external_url.clone())
        };
        let sent = notify::send_test(&receiver, &external_url, requested_by, &self.deliveries);
        match &sent {
            Ok(_) => tracing::info!(receiver = name, requested_by, "test notification delivered"),
            Err(e) => tracing::warn!(receiver = name, requested_by, error = %e.message(),
                "test notification not delivered"),
        }
        Some(sent.map_err(|e| e.message().to_string()))
    }
}

/// What the rules thread owns: the engine (no one else touches it), where it publishes
/// what readers see, and what it reads and writes.
struct Rules {
    engine: Engine,
    snapshots: Arc<SnapshotCell>,
    store: Arc<dyn Store>,
    index: Arc<SeriesIndex>,
    doorbell: Arc<notify::Doorbell>,
    /// Whether this server holds the evaluator's lease (always, on SQLite).
    leadership: Arc<crate::cluster::Leadership>,
    /// Whether it led at the last look.
    leading: bool,
    /// Evaluations, failures and durations per group, for `/metrics`.
    metrics: Arc<crate::telemetry::RuleMetrics>,
    /// Writes `probe_check_stale` before evaluations (see [`crate::staleness`]).
    stale: crate::staleness::StaleSweep,
    /// Maintenance windows: alerts they cover are not notified while they are on.
    maintenance: Arc<probewatch_alerting::maintenance::Windows>,
    /// Inhibition rules: firing alerts mute others.
    inhibitions: Arc<probewatch_alerting::inhibit::Inhibitions>,
}

impl Rules {
    /// Follows the lease: a server that starts leading takes the alert state the previous
    /// leader saved (pending since, firing since, last sent) and evaluates every group at
    /// once; one that does not lead shows the leader's state, read from the store, and
    /// evaluates nothing. Returns whether to evaluate.
    fn follow_lease(
        &mut self,
        next_due: &mut [Instant],
        last_refresh: &mut Option<Instant>,
    ) -> bool {
        let leading = self.leadership.is_leader();
        if leading && !self.leading {
            self.stale.forget();
            match self.store.alerts() {
                Ok(rows) => {
                    self.engine.restore(rows);
                    tracing::info!(
                        epoch = self.leadership.epoch(),
                        "evaluating rules, from the alert state the store holds"
                    );
                    next_due.iter_mut().for_each(|d| *d = Instant::now());
                }
                Err(err) => {
                    tracing::error!(error = %err,
                        "reading the saved alert state failed; evaluation waits");
                    return false;
                }
            }
        } else if !leading && self.leading {
            if self.leadership.released() {
                tracing::info!("rule evaluation stops: this server is shutting down");
            } else if self.leadership.lapsed() {
                tracing::warn!(
                    "not evaluating rules: this server's lease ran out before the store \
                     confirmed a renewal (another server may take over)"
                );
            } else {
                tracing::warn!("not evaluating rules: another server holds the lease");
            }
        }
        self.leading = leading;
        if !leading && last_refresh.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            *last_refresh = Some(Instant::now());
            if let Ok(rows) = self.store.alerts() {
                self.engine.restore(rows);
                self.snapshots.publish(self.engine.snapshot());
            }
        }
        leading
    }

    /// The rule loop: evaluates each group when its interval is due, and any group that reads a
    /// metric ingest has just committed right away.
    fn run(
        &mut self,
        ingested: Receiver<Vec<String>>,
        reloads: Receiver<RulesReload>,
        mut caught_up: Box<dyn FnMut() -> bool + Send>,
        stop: Arc<AtomicBool>,
    ) {
        // First let ingest catch up with what arrived while probewatch was down (at most a
        // minute: a file the watcher reported twice must not hold rules back forever).
        let started = Instant::now();
        while !caught_up() && started.elapsed() < Duration::from_secs(60) {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            while ingested.try_recv().is_ok() {}
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::info!(
            waited_ms = started.elapsed().as_millis() as u64,
            "rule evaluation starting"
        );
        let schedule = |engine: &Engine| -> (Vec<Duration>, Vec<Option<HashSet<String>>>) {
            engine
                .groups()
                .iter()
                .map(|g| {
                    (
                        Duration::from_millis(u64::try_from(g.interval_ms).unwrap_or(15_000)),
                        g.reads.clone(),
                    )
                })
                .collect()
        };
        let (mut intervals, mut reads) = schedule(&self.engine);
        let mut next_due: Vec<Instant> = vec![Instant::now(); intervals.len()];
        let mut last_refresh = None;
        while !stop.load(Ordering::SeqCst) {
            if let Ok(reload) = reloads.try_recv() {
                let now = crate::ingest::now_ms();
                let stale = self.engine.replace_rules(reload.groups, reload.config, now);
                if !stale.is_empty()
                    && let Err(err) = self.store.write_samples(&stale)
                {
                    tracing::error!(error = %err, "writing stale markers of removed rules failed");
                }
                (intervals, reads) = schedule(&self.engine);
                // Every group is evaluated at once with the new rules.
                next_due = vec![Instant::now(); intervals.len()];
                self.snapshots.publish(self.engine.snapshot());
                let _ = reload.done.send(());
            }
            let now = Instant::now();
            let wait = next_due
                .iter()
                .map(|d| d.saturating_duration_since(now))
                .min()
                .unwrap_or(Duration::from_millis(500))
                .min(Duration::from_millis(500));
            let mut triggered: HashSet<usize> = HashSet::new();
            match ingested.recv_timeout(wait) {
                Ok(metrics) => {
                    let mut names: HashSet<String> = metrics.into_iter().collect();
                    while let Ok(more) = ingested.try_recv() {
                        names.extend(more);
                    }
                    for (i, reads) in reads.iter().enumerate() {
                        let hit = reads
                            .as_ref()
                            .is_none_or(|r| r.iter().any(|m| names.contains(m)));
                        if hit {
                            triggered.insert(i);
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // Ingest has stopped; keep evaluating on the intervals until shutdown.
                    std::thread::sleep(wait);
                }
            }
            if !self.follow_lease(&mut next_due, &mut last_refresh) {
                // Not leading: look again in a moment (the schedule must not spin).
                let soon = Instant::now() + Duration::from_millis(500);
                next_due.iter_mut().for_each(|d| *d = (*d).max(soon));
                continue;
            }
            // Silence first, so the rules below see it at most one sweep old.
            self.stale.run_if_due(self.store.as_ref());
            let now = Instant::now();
            let due: Vec<usize> = (0..next_due.len())
                .filter(|i| next_due[*i] <= now || triggered.contains(i))
                .collect();
            if !due.is_empty() {
                self.evaluate_due(&due);
                for &i in &due {
                    next_due[i] = Instant::now() + intervals[i];
                }
                self.end_resolved_acknowledgements();
            }
        }
    }

    /// Ends the acknowledgements whose alert resolved (no active alert matches them any
    /// more): an acknowledgement lasts until the alert is OK again, as in Nagios, so the
    /// next time it fires it notifies.
    fn end_resolved_acknowledgements(&mut self) {
        let now = crate::ingest::now_ms();
        let rows = match self.store.silences() {
            Ok(rows) => rows,
            Err(err) => {
                tracing::warn!(error = %err, "reading acknowledgements failed; trying again later");
                return;
            }
        };
        if !rows.iter().any(|r| r.acknowledgement && r.active_at(now)) {
            return;
        }
        let active = self.engine.active_labels(false);
        for id in probewatch_alerting::silence::acknowledgements_to_end(&rows, &active, now) {
            match self.store.expire_silence(id, now, "resolved") {
                Ok(_) => tracing::info!(id, "acknowledgement ended: its alert resolved"),
                Err(err) => tracing::warn!(id, error = %err,
                    "ending a resolved acknowledgement failed; trying again later"),
            }
        }
    }

    /// Evaluates the groups due now, in order, at one time: the silences are read once, and
    /// one hint reads what all of them need (on PostgreSQL, two round trips a cycle instead
    /// of two a group). A group that writes samples (recorded series, `ALERTS`) that a
    /// group after it reads makes the groups after it read the store again, so a rule over
    /// another group's recorded series sees this round's value, as when each group read for
    /// itself.
    fn evaluate_due(&mut self, groups: &[usize]) {
        let now = crate::ingest::now_ms();
        let stored = match self.store.silences() {
            Ok(rows) => {
                let mut silences = probewatch_alerting::silence::active_silences(&rows, now);
                silences.extend(self.maintenance.active_silences(now));
                silences
            }
            Err(err) => {
                // Without the silences, notifying could page someone who silenced on purpose:
                // skip this evaluation; the next one tries again.
                tracing::error!(error = %err, "reading silences failed; evaluation skipped");
                return;
            }
        };
        let (store, index) = (self.store.clone(), self.index.clone());
        let source = StoreSource::new(store.as_ref(), &index);
        if groups.len() > 1 {
            let hint: Vec<_> = groups
                .iter()
                .flat_map(|&g| self.engine.selections(g, now))
                .collect();
            probewatch_promql::SeriesSource::prefetch(&source, &hint);
        }
        for (n, &group) in groups.iter().enumerate() {
            // Inhibitions follow what fires, which the groups before may have changed.
            let mut silences = stored.clone();
            silences.extend(self.inhibiting());
            let written = self.evaluate(group, now, &source, &silences);
            // What this group wrote (recorded series, ALERTS) and a later group reads must
            // be read again.
            let read_later = groups[n + 1..].iter().any(|&g| {
                self.engine.groups().get(g).is_some_and(|g| {
                    g.reads
                        .as_ref()
                        .is_none_or(|reads| reads.iter().any(|m| written.contains(m)))
                })
            });
            if !written.is_empty() && read_later {
                source.forget_prefetched();
            }
        }
    }

    /// Silences for the alerts that the inhibition rules mute, given what fires now.
    fn inhibiting(&self) -> Vec<probewatch_alerting::silence::Silence> {
        let rules = self.inhibitions.load();
        if rules.is_empty() {
            return Vec::new();
        }
        probewatch_alerting::inhibit::silences(&rules, &self.engine.active_labels(true))
    }

    /// Evaluates one group at `now`; its new alert state is applied only once the store
    /// saved it. Returns the names of the metrics it wrote.
    fn evaluate(
        &mut self,
        group: usize,
        now: i64,
        source: &StoreSource<'_>,
        silences: &[probewatch_alerting::silence::Silence],
    ) -> HashSet<String> {
        let started = std::time::Instant::now();
        let outcome = self.engine.evaluate(group, now, source, silences);
        let took = started.elapsed().as_secs_f64();
        let written: HashSet<String> = outcome.recorded.iter().map(|s| s.metric.clone()).collect();
        if !outcome.recorded.is_empty()
            && let Err(err) = self.store.write_samples(&outcome.recorded)
        {
            tracing::error!(error = %err, "writing recording rule samples failed");
        }
        let notify = outcome.updates.iter().any(|u| !u.notifications.is_empty());
        let saved = outcome.updates.is_empty()
            || match self.store.save_alerts(&outcome.updates) {
                Ok(()) => true,
                Err(err) => {
                    tracing::error!(error = %err,
                "saving alert state failed; the change is made again at the next evaluation");
                    false
                }
            };
        if saved {
            self.engine.apply(outcome.staged, now);
            if notify {
                self.doorbell.ring();
            }
        }
        let snapshot = self.engine.snapshot();
        if let Some(g) = snapshot.groups().get(group) {
            let label = crate::telemetry::RuleGroupLabel {
                rule_group: format!("{};{}", g.file.display(), g.name),
            };
            let failed = g
                .rules
                .iter()
                .map(|r| snapshot.health(&r.key))
                .filter(|h| h.last_evaluation_ms == Some(now) && h.last_error.is_some())
                .count();
            self.metrics.evaluations.get_or_create(&label).inc();
            self.metrics
                .failures
                .get_or_create(&label)
                .inc_by(failed as u64);
            self.metrics.last_duration.get_or_create(&label).set(took);
            self.metrics
                .last_evaluation
                .get_or_create(&label)
                .set(now as f64 / 1000.0);
        }
        self.snapshots.publish(snapshot);
        written
    }
}
