//! Rule evaluation and the alert lifecycle (inactive → pending → firing → resolved, as
//! Prometheus defines it), producing what the store must save and the notifications to
//! queue. Pure logic over a [`SeriesSource`]: the caller owns the clock, the store and the
//! threads.
//!
//! Invariant: the engine's memory of alert state only moves with the store. An evaluation
//! returns the new state *staged* in its [`GroupOutcome`]; the caller saves the updates and
//! only then calls [`Engine::apply`]. When the save fails, the next evaluation sees the old
//! state, computes the same change again, and queues its notification again.
//!
//! Readers (pages, the API) never touch the engine: the thread that owns it publishes an
//! [`EngineSnapshot`] into a [`SnapshotCell`] after each evaluation.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use probewatch_core::SeriesSample;
use probewatch_promql::{Matcher, QueryOptions, SeriesSource, Value};
use probewatch_store::{AlertEvent, AlertRow, AlertState, AlertUpdate, NewNotification};
use serde_json::json;

use crate::rulefile::{Group, RuleKind};
use crate::silence::Silence;
use crate::template::TemplateEnv;

/// Where matching alerts go.
#[derive(Debug, Clone)]
pub struct Route {
    /// Receiver name.
    pub receiver: String,
    /// Label matchers an alert must satisfy (all of them).
    pub matchers: Vec<Matcher>,
    /// Labels that split alerts into separate notifications (empty: one per evaluation).
    pub group_by: Vec<String>,
    /// How often a still-firing alert is notified again.
    pub repeat_interval_ms: i64,
    /// Delay before a group's first notification, to collect alerts that come together.
    pub group_wait_ms: i64,
    /// Least time between two notifications of one group.
    pub group_interval_ms: i64,
    /// Whether resolved alerts are notified.
    pub send_resolved: bool,
    /// Keep looking for further matching routes after this one.
    pub continue_matching: bool,
}

/// Engine settings.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// Routes, tried in order.
    pub routes: Vec<Route>,
    /// This probewatch's URL, for links in notifications.
    pub external_url: String,
    /// What rule templates see besides the alert: external labels and URL, and where
    /// `query` runs.
    pub templates: TemplateEnv,
}

/// An active alert in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveAlert {
    /// Labels, including `alertname`.
    pub labels: BTreeMap<String, String>,
    /// Pending or firing.
    pub state: AlertState,
    /// When the condition started to hold.
    pub active_at_ms: i64,
    /// When it fired.
    pub fired_at_ms: Option<i64>,
    /// Since when `keep_firing_for` keeps it firing.
    pub keep_firing_since_ms: Option<i64>,
    /// Last firing notification.
    pub last_sent_ms: Option<i64>,
    /// Latest value.
    pub value: f64,
    /// Rendered annotations.
    pub annotations: BTreeMap<String, String>,
}

/// How a rule's last evaluation went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleHealth {
    /// When it was last evaluated.
    pub last_evaluation_ms: Option<i64>,
    /// How long that took.
    pub duration_seconds: f64,
    /// The error, if it failed.
    pub last_error: Option<String>,
}

/// What one group evaluation produced.
#[derive(Debug, Default)]
pub struct GroupOutcome {
    /// Alert state to save, per rule that changed (with events and notifications).
    pub updates: Vec<AlertUpdate>,
    /// Samples from recording rules.
    pub recorded: Vec<SeriesSample>,
    /// The engine's new memory of the rules in `updates`: hand it to [`Engine::apply`] once
    /// `updates` are saved, and drop it when saving failed.
    pub staged: Vec<(String, BTreeMap<String, ActiveAlert>)>,
}

/// How long a resolved alert is still sent to Alertmanager receivers, so that one that was
/// down or restarted learns of the resolution (Prometheus keeps them as long).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// A firing alert that resolved, remembered for [`RESOLVED_RETENTION_MS`].
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedAlert {
    /// The rule it belonged to.
    pub rule_key: String,
    /// The alert as it was when it resolved.
    pub alert: ActiveAlert,
    /// When it resolved.
    pub resolved_at_ms: i64,
}

/// The engine as readers see it: the rule groups, and every rule's active alerts and health
/// as of the last evaluation whose state was saved.
#[derive(Debug, Clone, Default)]
pub struct EngineSnapshot {
    groups: Arc<Vec<Group>>,
    config: Arc<EngineConfig>,
    active: HashMap<String, Vec<ActiveAlert>>,
    resolved: Vec<ResolvedAlert>,
    health: HashMap<String, RuleHealth>,
}

impl EngineSnapshot {
    /// The rule groups.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// Active alerts of a rule, by labels.
    pub fn alerts(&self, rule_key: &str) -> Vec<&ActiveAlert> {
        self.active
            .get(rule_key)
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    }

    /// How a rule's last evaluation went.
    pub fn health(&self, rule_key: &str) -> RuleHealth {
        self.health.get(rule_key).cloned().unwrap_or_default()
    }

    /// What an Alertmanager receiver is told at `now_ms` (API v2 postable alerts), as
    /// Prometheus re-sends it: every firing alert routed to `receiver` and not silenced, valid
    /// until `now_ms + valid_for_ms` (so Alertmanager resolves it by itself only when the
    /// re-sends stop), and every alert routed there that resolved in the last
    /// [`RESOLVED_RETENTION_MS`], ending when it resolved. Pending alerts are not sent.
    pub fn alertmanager_alerts(
        &self,
        receiver: &str,
        now_ms: i64,
        valid_for_ms: i64,
        silences: &[Silence],
    ) -> Vec<serde_json::Value> {
        let routed = |labels: &BTreeMap<String, String>| {
            routes_for(&self.config.routes, labels)
                .iter()
                .any(|r| r.receiver == receiver)
        };
        let mut out = Vec::new();
        for alert in self.active.values().flatten() {
            if alert.state == AlertState::Firing
                && routed(&alert.labels)
                && !crate::silence::silenced(silences, &alert.labels)
            {
                out.push(postable_alert(
                    alert,
                    now_ms.saturating_add(valid_for_ms),
                    &self.config,
                ));
            }
        }
        for r in &self.resolved {
            if now_ms - r.resolved_at_ms <= RESOLVED_RETENTION_MS && routed(&r.alert.labels) {
                out.push(postable_alert(&r.alert, r.resolved_at_ms, &self.config));
            }
        }
        out
    }
}

/// An alert's labels as receivers get them: the external labels, then the alert's own
/// (which win), as Prometheus sends them to Alertmanager.
fn sent_labels(
    config: &EngineConfig,
    labels: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = config.templates.external_labels.clone();
    out.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// One alert as Alertmanager's API v2 takes it.
fn postable_alert(
    alert: &ActiveAlert,
    ends_at_ms: i64,
    config: &EngineConfig,
) -> serde_json::Value {
    let external_url = &config.external_url;
    json!({
        "labels": sent_labels(config, &alert.labels),
        "annotations": alert.annotations,
        "startsAt": rfc3339(alert.fired_at_ms.unwrap_or(alert.active_at_ms)),
        "endsAt": rfc3339(ends_at_ms),
        "generatorURL": format!("{external_url}/alerts"),
    })
}

/// The routes an alert goes to: the first matching one, and after it further matches while
/// `continue` is set. With no routes configured, nothing is sent.
fn routes_for<'a>(routes: &'a [Route], labels: &BTreeMap<String, String>) -> Vec<&'a Route> {
    let mut out = Vec::new();
    for route in routes {
        if route
            .matchers
            .iter()
            .all(|m| m.matches(labels.get(&m.name).map_or("", String::as_str)))
        {
            out.push(route);
            if !route.continue_matching {
                break;
            }
        }
    }
    out
}

/// Where the thread that owns the engine publishes snapshots and readers take the newest,
/// without waiting for an evaluation in progress.
#[derive(Debug, Default)]
pub struct SnapshotCell(RwLock<Arc<EngineSnapshot>>);

impl SnapshotCell {
    /// A cell holding `snapshot`.
    pub fn new(snapshot: EngineSnapshot) -> SnapshotCell {
        SnapshotCell(RwLock::new(Arc::new(snapshot)))
    }

    /// Replaces the snapshot readers see.
    pub fn publish(&self, snapshot: EngineSnapshot) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
    }

    /// The newest snapshot.
    pub fn load(&self) -> Arc<EngineSnapshot> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Alerts going to one receiver under one group key.
struct Batch {
    group_labels: BTreeMap<String, String>,
    alerts: Vec<crate::payload::AlertPayload>,
    group_wait_ms: i64,
    group_interval_ms: i64,
}

/// What moves an alerting rule's alerts on in one evaluation.
#[derive(Clone, Copy)]
struct Lifecycle<'a> {
    for_ms: i64,
    keep_firing_for_ms: i64,
    now_ms: i64,
    silences: &'a [Silence],
}

/// What to save of a rule's alerts after an evaluation: every alert as it now is, the
/// state changes as events, and the notifications.
fn alert_update(
    rule_key: &str,
    current: &BTreeMap<String, ActiveAlert>,
    events: Vec<(String, &'static str, f64)>,
    notifications: Vec<NewNotification>,
    now_ms: i64,
) -> AlertUpdate {
    AlertUpdate {
        rule_key: rule_key.to_string(),
        alerts: current
            .iter()
            .map(|(key, a)| AlertRow {
                rule_key: rule_key.to_string(),
                labels: key.clone(),
                state: a.state,
                active_at_ms: a.active_at_ms,
                fired_at_ms: a.fired_at_ms,
                keep_firing_since_ms: a.keep_firing_since_ms,
                last_sent_ms: a.last_sent_ms,
                value: a.value,
                annotations: serde_json::to_string(&a.annotations).unwrap_or_default(),
            })
            .collect(),
        events: events
            .into_iter()
            .map(|(key, event, value)| AlertEvent {
                rule_key: rule_key.to_string(),
                labels: key,
                event: event.to_string(),
                at_ms: now_ms,
                value,
            })
            .collect(),
        notifications,
    }
}

/// Canonical text of a label map (`{a="b",c="d"}`), the key alerts are stored under.
pub fn canonical(labels: &BTreeMap<String, String>) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        probewatch_core::labels::escape_label_value(v, &mut out);
        out.push('"');
    }
    out.push('}');
    out
}

/// An alert's fingerprint as Alertmanager computes it for the same labels (prometheus
/// common's `LabelSet.Fingerprint`: 64-bit FNV-1a over each name and value in name order,
/// each followed by the byte 0xff), as 16 hex digits, so that payloads, silences and
/// Alertmanager's own view of an alert line up.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    const SEPARATOR: u8 = 0xff;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut add = |b: u8| {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    };
    for (name, value) in labels {
        name.bytes().for_each(&mut add);
        add(SEPARATOR);
        value.bytes().for_each(&mut add);
        add(SEPARATOR);
    }
    format!("{hash:016x}")
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| String::new(), |t| t.to_string())
}

/// The rule engine: rule groups and the state of every alert.
pub struct Engine {
    groups: Arc<Vec<Group>>,
    config: Arc<EngineConfig>,
    options: QueryOptions,
    active: HashMap<String, BTreeMap<String, ActiveAlert>>,
    resolved: Vec<ResolvedAlert>,
    /// Each rule's series (metric, canonical labels) written at its last evaluation.
    written: HashMap<String, std::collections::HashSet<(String, String)>>,
    health: HashMap<String, RuleHealth>,
}

impl Engine {
    /// Builds the engine, restoring stored alerts of rules that still exist.
    pub fn new(groups: Vec<Group>, config: EngineConfig, stored: Vec<AlertRow>) -> Engine {
        let mut engine = Engine {
            groups: Arc::new(groups),
            config: Arc::new(config),
            options: QueryOptions::default(),
            active: HashMap::new(),
            resolved: Vec::new(),
            written: HashMap::new(),
            health: HashMap::new(),
        };
        engine.restore(stored);
        engine
    }

    /// Replaces the alert state with what the store holds (alerts of rules that still
    /// exist): at start, and when this server takes over evaluation from another, or follows
    /// the one that evaluates.
    pub fn restore(&mut self, stored: Vec<AlertRow>) {
        let mut active: HashMap<String, BTreeMap<String, ActiveAlert>> = HashMap::new();
        let keys: std::collections::HashSet<&str> = self
            .groups
            .iter()
            .flat_map(|g| g.rules.iter().map(|r| r.key.as_str()))
            .collect();
        for row in stored {
            if !keys.contains(row.rule_key.as_str()) {
                continue;
            }
            let Some(pairs) = probewatch_core::labels::parse_canonical(&row.labels) else {
                continue;
            };
            let annotations: BTreeMap<String, String> =
                serde_json::from_str(&row.annotations).unwrap_or_default();
            active.entry(row.rule_key.clone()).or_default().insert(
                row.labels.clone(),
                ActiveAlert {
                    labels: pairs.into_iter().collect(),
                    state: row.state,
                    active_at_ms: row.active_at_ms,
                    fired_at_ms: row.fired_at_ms,
                    keep_firing_since_ms: row.keep_firing_since_ms,
                    last_sent_ms: row.last_sent_ms,
                    value: row.value,
                    annotations,
                },
            );
        }
        self.active = active;
    }

    /// The rule groups.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// Takes new rule groups and settings (a reload). A rule that is still there (same group,
    /// name and position: the same key) keeps its alerts, health and written series; the
    /// state of rules that are gone is dropped, as Prometheus drops it. Returns the stale
    /// markers that end the series the removed rules wrote, to be stored at `now_ms`.
    pub fn replace_rules(
        &mut self,
        groups: Vec<Group>,
        config: EngineConfig,
        now_ms: i64,
    ) -> Vec<SeriesSample> {
        let keys: std::collections::HashSet<String> = groups
            .iter()
            .flat_map(|g| g.rules.iter().map(|r| r.key.clone()))
            .collect();
        self.active.retain(|k, _| keys.contains(k));
        self.health.retain(|k, _| keys.contains(k));
        self.resolved.retain(|r| keys.contains(&r.rule_key));
        let mut stale = Vec::new();
        self.written.retain(|k, series| {
            if keys.contains(k) {
                return true;
            }
            stale.extend(series.drain().map(|(metric, labels)| SeriesSample {
                metric,
                labels,
                time_ms: now_ms,
                value: f64::from_bits(probewatch_promql::value::STALE_NAN_BITS),
            }));
            false
        });
        self.groups = Arc::new(groups);
        self.config = Arc::new(config);
        stale
    }

    /// Active alerts of a rule.
    pub fn alerts(&self, rule_key: &str) -> Vec<&ActiveAlert> {
        self.active
            .get(rule_key)
            .map(|m| m.values().collect())
            .unwrap_or_default()
    }

    /// The labels of every rule's active alerts, in rule order (only the firing ones with
    /// `firing_only`).
    pub fn active_labels(&self, firing_only: bool) -> Vec<&BTreeMap<String, String>> {
        self.groups
            .iter()
            .flat_map(|g| g.rules.iter())
            .flat_map(|r| self.alerts(&r.key))
            .filter(|a| !firing_only || a.state == AlertState::Firing)
            .map(|a| &a.labels)
            .collect()
    }

    /// How a rule's last evaluation went.
    pub fn health(&self, rule_key: &str) -> RuleHealth {
        self.health.get(rule_key).cloned().unwrap_or_default()
    }

    /// What readers may see now.
    pub fn snapshot(&self) -> EngineSnapshot {
        EngineSnapshot {
            groups: self.groups.clone(),
            config: self.config.clone(),
            resolved: self.resolved.clone(),
            active: self
                .active
                .iter()
                .map(|(k, alerts)| (k.clone(), alerts.values().cloned().collect()))
                .collect(),
            health: self.health.clone(),
        }
    }

    /// Takes in the state an evaluation at `at_ms` staged, once the store has saved its
    /// updates. Firing alerts it drops are remembered as resolved for
    /// [`RESOLVED_RETENTION_MS`]; an alert that fires again is no longer resolved.
    pub fn apply(&mut self, staged: Vec<(String, BTreeMap<String, ActiveAlert>)>, at_ms: i64) {
        for (rule_key, alerts) in staged {
            if let Some(before) = self.active.get(&rule_key) {
                for (key, alert) in before {
                    if alert.state == AlertState::Firing && !alerts.contains_key(key) {
                        self.resolved.push(ResolvedAlert {
                            rule_key: rule_key.clone(),
                            alert: alert.clone(),
                            resolved_at_ms: at_ms,
                        });
                    }
                }
            }
            self.resolved.retain(|r| {
                r.rule_key != rule_key || !alerts.contains_key(&canonical(&r.alert.labels))
            });
            self.active.insert(rule_key, alerts);
        }
        self.resolved
            .retain(|r| at_ms - r.resolved_at_ms <= RESOLVED_RETENTION_MS);
    }

    /// Evaluates every rule of group `index` at `now_ms`; alerts matching one of `silences`
    /// are not notified.
    pub fn evaluate(
        &mut self,
        index: usize,
        now_ms: i64,
        source: &dyn SeriesSource,
        silences: &[Silence],
    ) -> GroupOutcome {
        let mut outcome = GroupOutcome::default();
        let Some(group) = self.groups.get(index) else {
            return outcome;
        };
        let options = QueryOptions {
            subquery_step_ms: group.interval_ms,
            ..self.options
        };
        let rules = group.rules.clone();
        let group_name = group.name.clone();
        // Rules run in order at one timestamp, each seeing what the ones before recorded.
        let mut overlay = probewatch_promql::Overlay::new(source);
        // Tell the source everything the group reads, so a remote store can fetch it in a
        // few statements instead of one round trip per selector (a source that holds it
        // already, from a hint for several groups, reads nothing). A group that reads
        // nothing gives no hint: an empty one would end the hint for the groups after it.
        let selections = self.selections(index, now_ms);
        if !selections.is_empty() {
            overlay.prefetch(&selections);
        }
        for rule in &rules {
            let started = Instant::now();
            let result = rule.query.instant(&overlay, now_ms, &options);
            let mut written = Vec::new();
            let error = match (result, &rule.kind) {
                (Err(e), _) => Some(e.to_string()),
                (Ok(value), RuleKind::Record) => record(rule, value, now_ms, &mut written).err(),
                (Ok(value), RuleKind::Alert { .. }) => match as_vector(value) {
                    Ok(samples) => match self.update_alerts(rule, samples, now_ms, silences) {
                        Ok((update, state)) => {
                            written = alert_series(&state, now_ms);
                            match update {
                                Some(update) => {
                                    outcome.updates.push(update);
                                    outcome.staged.push((rule.key.clone(), state));
                                }
                                // Only values moved; nothing to save, nothing to wait for.
                                None => {
                                    self.active.insert(rule.key.clone(), state);
                                }
                            }
                            None
                        }
                        Err(e) => Some(e),
                    },
                    Err(e) => Some(e),
                },
            };
            if error.is_none() {
                // Series this rule wrote last time and not now end with a stale marker, as in
                // Prometheus, so they vanish at once instead of after the lookback.
                let now_written: std::collections::HashSet<(String, String)> = written
                    .iter()
                    .map(|s| (s.metric.clone(), s.labels.clone()))
                    .collect();
                let before = self
                    .written
                    .insert(rule.key.clone(), now_written.clone())
                    .unwrap_or_default();
                for (metric, labels) in before.difference(&now_written) {
                    written.push(SeriesSample {
                        metric: metric.clone(),
                        labels: labels.clone(),
                        time_ms: now_ms,
                        value: f64::from_bits(probewatch_promql::value::STALE_NAN_BITS),
                    });
                }
                for s in &written {
                    let mut labels = probewatch_promql::Labels::from_pairs(
                        probewatch_core::labels::parse_canonical(&s.labels).unwrap_or_default(),
                    );
                    labels.set(probewatch_promql::labels::METRIC_NAME, s.metric.clone());
                    overlay.add(&labels, s.time_ms, s.value);
                }
                outcome.recorded.append(&mut written);
            }
            if let Some(e) = &error {
                tracing::warn!(group = %group_name, rule = %rule.name, error = %e, "rule evaluation failed");
            }
            self.health.insert(
                rule.key.clone(),
                RuleHealth {
                    last_evaluation_ms: Some(now_ms),
                    duration_seconds: started.elapsed().as_secs_f64(),
                    last_error: error,
                },
            );
        }
        outcome
    }

    /// Everything the rules of group `index` read when evaluated at `now_ms`: a hint for a
    /// source ([`SeriesSource::prefetch`]), for one group or for all those due together.
    pub fn selections(&self, index: usize, now_ms: i64) -> Vec<probewatch_promql::Selection> {
        let Some(group) = self.groups.get(index) else {
            return Vec::new();
        };
        let options = QueryOptions {
            subquery_step_ms: group.interval_ms,
            ..self.options
        };
        group
            .rules
            .iter()
            .flat_map(|rule| rule.query.selections(now_ms, &options))
            .collect()
    }

    /// Advances one alerting rule's alerts: what to save if anything changed, and the rule's
    /// new state (not applied here). In three steps: the query's result becomes the alerts
    /// it names, every alert moves on in its lifecycle, and what is due becomes
    /// notifications.
    fn update_alerts(
        &self,
        rule: &crate::rulefile::Rule,
        samples: Vec<probewatch_promql::Sample>,
        now_ms: i64,
        silences: &[Silence],
    ) -> Result<(Option<AlertUpdate>, BTreeMap<String, ActiveAlert>), String> {
        let RuleKind::Alert {
            for_ms,
            keep_firing_for_ms,
            annotations,
        } = &rule.kind
        else {
            return Ok((None, BTreeMap::new()));
        };
        let before = self.active.get(&rule.key).cloned().unwrap_or_default();
        let mut current = before.clone();
        let mut events = Vec::new();
        let seen = self.take_result(
            rule,
            annotations,
            *for_ms,
            samples,
            now_ms,
            &mut current,
            &mut events,
        )?;
        let lifecycle = Lifecycle {
            for_ms: *for_ms,
            keep_firing_for_ms: *keep_firing_for_ms,
            now_ms,
            silences,
        };
        let (firing_now, resolved) = self.advance(&lifecycle, &seen, &mut current, &mut events);
        for key in &firing_now {
            if let Some(alert) = current.get_mut(key) {
                alert.last_sent_ms = Some(now_ms);
            }
        }
        let firing: Vec<&ActiveAlert> = firing_now.iter().filter_map(|k| current.get(k)).collect();
        let notifications = self.notifications(&firing, &resolved, now_ms);
        let changed = current != before || !events.is_empty() || !notifications.is_empty();
        // Values change every evaluation; only state changes are worth a write.
        let strip = |m: &BTreeMap<String, ActiveAlert>| -> Vec<(String, AlertState, Option<i64>, Option<i64>)> {
            m.iter()
                .map(|(k, a)| (k.clone(), a.state, a.keep_firing_since_ms, a.last_sent_ms))
                .collect()
        };
        let state_changed = strip(&current) != strip(&before);
        let save = changed && (state_changed || !events.is_empty() || !notifications.is_empty());
        let update = save.then(|| alert_update(&rule.key, &current, events, notifications, now_ms));
        Ok((update, current))
    }

    /// The query's result as alerts: each series updates its alert's value and annotations,
    /// or starts a new one (pending, with an event when the rule has a `for`). Returns the
    /// keys seen; two series that end with the same labels are an error.
    #[allow(clippy::too_many_arguments)] // the rule's parts and the two things it fills
    fn take_result(
        &self,
        rule: &crate::rulefile::Rule,
        annotations: &[(String, crate::template::Template)],
        for_ms: i64,
        samples: Vec<probewatch_promql::Sample>,
        now_ms: i64,
        current: &mut BTreeMap<String, ActiveAlert>,
        events: &mut Vec<(String, &'static str, f64)>,
    ) -> Result<std::collections::HashSet<String>, String> {
        let mut seen = std::collections::HashSet::new();
        let env = &self.config.templates;
        for sample in samples {
            // Templates see the result's labels with its metric name, as in Prometheus; the
            // alert's labels drop the name after the rule's labels are applied.
            let sample_labels: BTreeMap<String, String> =
                sample.labels.pairs().iter().cloned().collect();
            let mut labels = with_rule_labels(rule, &sample_labels, sample.v, Some((env, now_ms)));
            labels.remove(probewatch_promql::labels::METRIC_NAME);
            labels.insert("alertname".into(), rule.name.clone());
            let rendered: BTreeMap<String, String> = annotations
                .iter()
                .map(|(k, t)| {
                    (
                        k.clone(),
                        t.render_in(&sample_labels, sample.v, env, now_ms),
                    )
                })
                .collect();
            let key = canonical(&labels);
            if !seen.insert(key.clone()) {
                return Err(
                    "the result has two series with the same labels once the alert's \
                            labels are applied"
                        .into(),
                );
            }
            match current.get_mut(&key) {
                Some(alert) => {
                    alert.value = sample.v;
                    alert.annotations = rendered;
                    alert.keep_firing_since_ms = None;
                }
                None => {
                    current.insert(
                        key.clone(),
                        ActiveAlert {
                            labels,
                            state: AlertState::Pending,
                            active_at_ms: now_ms,
                            fired_at_ms: None,
                            keep_firing_since_ms: None,
                            last_sent_ms: None,
                            value: sample.v,
                            annotations: rendered,
                        },
                    );
                    if for_ms > 0 {
                        events.push((key, "pending", sample.v));
                    }
                }
            }
        }
        Ok(seen)
    }

    /// Moves every alert on: an unseen pending alert goes, an unseen firing one resolves
    /// once `keep_firing_for` has passed, a pending one fires after `for`. Returns the keys
    /// of firing alerts due a notification (never sent, or past the route's repeat
    /// interval, and not silenced) and the resolved alerts to announce (those announced
    /// while firing and not silenced now).
    fn advance(
        &self,
        lifecycle: &Lifecycle<'_>,
        seen: &std::collections::HashSet<String>,
        current: &mut BTreeMap<String, ActiveAlert>,
        events: &mut Vec<(String, &'static str, f64)>,
    ) -> (Vec<String>, Vec<ActiveAlert>) {
        let Lifecycle {
            for_ms,
            keep_firing_for_ms,
            now_ms,
            silences,
        } = *lifecycle;
        let silenced =
            |labels: &BTreeMap<String, String>| crate::silence::silenced(silences, labels);
        let mut firing_now = Vec::new();
        let mut resolved = Vec::new();
        let keys: Vec<String> = current.keys().cloned().collect();
        for key in keys {
            let Some(alert) = current.get_mut(&key) else {
                continue;
            };
            if !seen.contains(&key) {
                match alert.state {
                    AlertState::Pending => {
                        current.remove(&key);
                    }
                    AlertState::Firing => {
                        let since = *alert.keep_firing_since_ms.get_or_insert(now_ms);
                        if now_ms - since < keep_firing_for_ms {
                            continue;
                        }
                        events.push((key.clone(), "resolved", alert.value));
                        if let Some(a) = current.remove(&key) {
                            // Only what was announced is announced as resolved.
                            if a.last_sent_ms.is_some() && !silenced(&a.labels) {
                                resolved.push(a);
                            }
                        }
                    }
                }
                continue;
            }
            if alert.state == AlertState::Pending && now_ms - alert.active_at_ms >= for_ms {
                alert.state = AlertState::Firing;
                alert.fired_at_ms = Some(now_ms);
                events.push((key.clone(), "firing", alert.value));
            }
            if alert.state == AlertState::Firing {
                // Due: never announced (new, or silenced until now), or repeat_interval
                // passed. A silenced alert waits; it is announced when the silence ends.
                let repeat = self
                    .route_for(&alert.labels)
                    .first()
                    .map_or(i64::MAX, |r| r.repeat_interval_ms);
                let due = alert
                    .last_sent_ms
                    .is_none_or(|sent| now_ms - sent >= repeat);
                if due && !silenced(&alert.labels) {
                    firing_now.push(key.clone());
                }
            }
        }
        (firing_now, resolved)
    }

    /// The notifications for the alerts due (firing) and resolved: one per receiver and
    /// group of labels, each group per route (alerts of several rules with the same group
    /// labels share it, and are delivered together when due together).
    fn notifications(
        &self,
        firing: &[&ActiveAlert],
        resolved: &[ActiveAlert],
        now_ms: i64,
    ) -> Vec<NewNotification> {
        let mut batches: BTreeMap<(String, String), Batch> = BTreeMap::new();
        for (alert, is_firing) in firing
            .iter()
            .map(|a| (*a, true))
            .chain(resolved.iter().map(|a| (a, false)))
        {
            for route in self.route_for(&alert.labels) {
                if !is_firing && !route.send_resolved {
                    continue;
                }
                let group_labels: BTreeMap<String, String> = route
                    .group_by
                    .iter()
                    .filter_map(|n| alert.labels.get(n).map(|v| (n.clone(), v.clone())))
                    .collect();
                let position = self
                    .config
                    .routes
                    .iter()
                    .position(|r| std::ptr::eq(r, route))
                    .unwrap_or(0);
                let entry = batches
                    .entry((
                        route.receiver.clone(),
                        format!("{position}:{}", canonical(&group_labels)),
                    ))
                    .or_insert_with(|| Batch {
                        group_labels,
                        alerts: Vec::new(),
                        group_wait_ms: route.group_wait_ms,
                        group_interval_ms: route.group_interval_ms,
                    });
                let labels = sent_labels(&self.config, &alert.labels);
                entry.alerts.push(crate::payload::AlertPayload {
                    status: if is_firing { "firing" } else { "resolved" }.into(),
                    fingerprint: fingerprint(&labels),
                    labels,
                    annotations: alert.annotations.clone(),
                    starts_at: rfc3339(alert.fired_at_ms.unwrap_or(alert.active_at_ms)),
                    ends_at: if is_firing {
                        "0001-01-01T00:00:00Z".to_string()
                    } else {
                        rfc3339(now_ms)
                    },
                    generator_url: format!("{}/alerts", self.config.external_url),
                });
            }
        }
        batches
            .into_iter()
            .map(|((receiver, group_key), batch)| {
                let payload = crate::payload::GroupPayload::new(
                    group_key.clone(),
                    receiver.clone(),
                    batch.group_labels,
                    self.config.external_url.clone(),
                    batch.alerts,
                );
                NewNotification {
                    receiver,
                    payload: serde_json::to_string(&payload).unwrap_or_default(),
                    created_at_ms: now_ms,
                    group_key,
                    group_wait_ms: batch.group_wait_ms,
                    group_interval_ms: batch.group_interval_ms,
                }
            })
            .collect()
    }

    /// The routes an alert goes to.
    fn route_for(&self, labels: &BTreeMap<String, String>) -> Vec<&Route> {
        routes_for(&self.config.routes, labels)
    }
}

/// A result sample's labels without the metric name: what a recording rule writes under
/// its own name.
fn without_name(labels: &probewatch_promql::Labels) -> BTreeMap<String, String> {
    labels
        .pairs()
        .iter()
        .filter(|(k, _)| k != probewatch_promql::labels::METRIC_NAME)
        .cloned()
        .collect()
}

/// `sample_labels` with the rule's labels rendered over them (an empty value removes one).
/// A result's labels with the rule's labels applied: an alerting rule's are templates
/// rendered in `templates` at `now_ms` (`Some`), a recording rule's are taken as written
/// (`None`), as in Prometheus. An empty value removes the label.
fn with_rule_labels(
    rule: &crate::rulefile::Rule,
    sample_labels: &BTreeMap<String, String>,
    value: f64,
    templates: Option<(&TemplateEnv, i64)>,
) -> BTreeMap<String, String> {
    let mut labels = sample_labels.clone();
    for (k, template) in &rule.labels {
        let v = match templates {
            Some((env, now_ms)) => template.render_in(sample_labels, value, env, now_ms),
            None => template.source().to_string(),
        };
        if v.is_empty() {
            labels.remove(k);
        } else {
            labels.insert(k.clone(), v);
        }
    }
    labels
}

/// A recording rule's samples: its name as the metric, the result's labels plus the rule's.
/// An alerting rule's result as samples: a vector as it is, a scalar (`expr: 1`) as one
/// sample without labels, as Prometheus's rule query function turns it.
fn as_vector(value: Value) -> Result<Vec<probewatch_promql::Sample>, String> {
    match value {
        Value::Vector(samples) => Ok(samples),
        Value::Scalar(t, v) => Ok(vec![probewatch_promql::Sample {
            labels: probewatch_promql::Labels::default(),
            t,
            v,
            drop_name: false,
        }]),
        other => Err(format!(
            "an alerting rule's expression must give an instant vector or a scalar, not a {}",
            other.type_name()
        )),
    }
}

/// The `ALERTS` and `ALERTS_FOR_STATE` samples of a rule's active alerts, as Prometheus writes
/// them at every evaluation: `ALERTS{alertstate="pending|firing", <alert labels>} 1`, and
/// `ALERTS_FOR_STATE{<alert labels>}` = when the alert became active, in seconds.
fn alert_series(state: &BTreeMap<String, ActiveAlert>, now_ms: i64) -> Vec<SeriesSample> {
    let mut out = Vec::with_capacity(state.len() * 2);
    for alert in state.values() {
        let mut labels = alert.labels.clone();
        labels.insert(
            "alertstate".into(),
            match alert.state {
                AlertState::Pending => "pending",
                AlertState::Firing => "firing",
            }
            .into(),
        );
        out.push(SeriesSample {
            metric: "ALERTS".into(),
            labels: canonical(&labels),
            time_ms: now_ms,
            value: 1.0,
        });
        out.push(SeriesSample {
            metric: "ALERTS_FOR_STATE".into(),
            labels: canonical(&alert.labels),
            time_ms: now_ms,
            value: alert.active_at_ms as f64 / 1000.0,
        });
    }
    out
}

fn record(
    rule: &crate::rulefile::Rule,
    value: Value,
    now_ms: i64,
    out: &mut Vec<SeriesSample>,
) -> Result<(), String> {
    let samples: Vec<(BTreeMap<String, String>, f64)> = match value {
        Value::Vector(v) => v
            .into_iter()
            .map(|s| (without_name(&s.labels), s.v))
            .collect(),
        Value::Scalar(_, v) => vec![(BTreeMap::new(), v)],
        other => {
            return Err(format!(
                "a recording rule's expression must give a vector or scalar, not a {}",
                other.type_name()
            ));
        }
    };
    for (sample_labels, v) in samples {
        let labels = with_rule_labels(rule, &sample_labels, v, None);
        out.push(SeriesSample {
            metric: rule.name.clone(),
            labels: canonical(&labels),
            time_ms: now_ms,
            value: v,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use probewatch_promql::{Labels, MemorySource};

    use super::*;

    const RULES: &str = r#"
groups:
  - name: g
    rules:
      - alert: CheckCritical
        expr: probe_check_status == 2
        for: 1m
        keep_firing_for: 30s
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.check }} is critical ({{ $value }})"
      - record: probe:critical:count
        expr: count(probe_check_status == 2)
"#;

    fn engine(stored: Vec<AlertRow>) -> Engine {
        let groups = crate::rulefile::parse(Path::new("r.yml"), RULES, 15_000).expect("rules");
        let config = EngineConfig {
            routes: vec![Route {
                receiver: "ops".into(),
                matchers: vec![Matcher::new("severity", "=", "page").expect("matcher")],
                group_by: vec!["alertname".into()],
                repeat_interval_ms: 3_600_000,
                group_wait_ms: 0,
                group_interval_ms: 0,
                send_resolved: true,
                continue_matching: false,
            }],
            external_url: "http://pw".into(),
            templates: TemplateEnv::default(),
        };
        Engine::new(groups, config, stored)
    }

    fn source(points: &[(i64, f64)]) -> MemorySource {
        let mut s = MemorySource::new();
        let labels = Labels::from_pairs([
            ("__name__", "probe_check_status"),
            ("check", "login"),
            ("probe", "web"),
        ]);
        s.add(&labels, points.iter().copied());
        s
    }

    /// One evaluation whose updates the store saved: the staged state is applied.
    fn step(e: &mut Engine, t: i64, src: &MemorySource, silences: &[Silence]) -> GroupOutcome {
        let mut out = e.evaluate(0, t, src, silences);
        e.apply(std::mem::take(&mut out.staged), t);
        out
    }

    #[test]
    fn a_rule_sees_what_the_rules_before_it_recorded_at_the_same_time() {
        let groups = crate::rulefile::parse(
            Path::new("chain.yml"),
            "groups:\n  - name: chain\n    rules:\n      - record: r1\n        expr: m * 2\n      \
             - record: r2\n        expr: r1 + 1\n      - alert: High\n        expr: r2 > 6\n",
            60_000,
        )
        .expect("rules");
        let mut e = Engine::new(groups, EngineConfig::default(), Vec::new());
        let mut src = MemorySource::new();
        src.add(&Labels::from_pairs([("__name__", "m")]), [(0, 3.0)]);
        let out = e.evaluate(0, 0, &src, &[]);
        let recorded: Vec<(&str, f64)> = out
            .recorded
            .iter()
            .map(|s| (s.metric.as_str(), s.value))
            .collect();
        assert_eq!(
            recorded,
            [
                ("r1", 6.0),
                ("r2", 7.0),
                ("ALERTS", 1.0),
                ("ALERTS_FOR_STATE", 0.0)
            ],
            "r2 is this evaluation's r1 + 1"
        );
        assert_eq!(out.updates.len(), 1, "the alert on r2 is pending at once");
    }

    #[test]
    fn fingerprints_are_alertmanagers() {
        // prometheus/common model/signature_test.go's vectors.
        let labels = BTreeMap::from([
            ("name".to_string(), "garland, briggs".to_string()),
            ("fear".to_string(), "love is not enough".to_string()),
        ]);
        assert_eq!(
            fingerprint(&labels),
            format!("{:016x}", 5_799_056_148_416_392_346u64)
        );
        assert_eq!(
            fingerprint(&BTreeMap::new()),
            format!("{:016x}", 14_695_981_039_346_656_037u64)
        );
    }

    #[test]
    fn a_state_change_whose_save_failed_is_made_again() {
        let mut e = engine(Vec::new());
        let key = e.groups()[0].rules[0].key.clone();
        let src = source(&[(0, 2.0), (30_000, 2.0), (60_000, 2.0), (90_000, 2.0)]);
        step(&mut e, 0, &src, &[]);
        // Firing at 60 s, but the store failed: the caller drops the staged state.
        let failed = e.evaluate(0, 60_000, &src, &[]);
        assert_eq!(failed.updates[0].notifications.len(), 1);
        assert_eq!(
            e.alerts(&key)[0].state,
            AlertState::Pending,
            "memory unchanged"
        );
        assert_eq!(e.snapshot().alerts(&key)[0].state, AlertState::Pending);
        // The next evaluation fires again, and queues the notification again.
        let out = step(&mut e, 90_000, &src, &[]);
        assert_eq!(out.updates[0].alerts[0].state, AlertState::Firing);
        assert_eq!(out.updates[0].notifications.len(), 1, "not lost");
        assert_eq!(e.snapshot().alerts(&key)[0].state, AlertState::Firing);
        // Saved this time: no repeat.
        assert!(step(&mut e, 120_000, &src, &[]).updates.is_empty());
    }

    #[test]
    fn pending_then_firing_then_resolved_with_notifications() {
        let mut e = engine(Vec::new());
        let key = e.groups()[0].rules[0].key.clone();
        let src = source(&[(0, 2.0), (30_000, 2.0), (60_000, 2.0), (90_000, 0.0)]);
        let out = step(&mut e, 0, &src, &[]);
        assert_eq!(out.updates.len(), 1);
        assert_eq!(out.updates[0].alerts[0].state, AlertState::Pending);
        assert!(out.updates[0].notifications.is_empty());
        let written: Vec<(&str, &str)> = out
            .recorded
            .iter()
            .map(|s| (s.metric.as_str(), s.labels.as_str()))
            .collect();
        assert_eq!(
            written,
            [
                (
                    "ALERTS",
                    r#"{alertname="CheckCritical",alertstate="pending",check="login",probe="web",severity="page"}"#
                ),
                (
                    "ALERTS_FOR_STATE",
                    r#"{alertname="CheckCritical",check="login",probe="web",severity="page"}"#
                ),
                ("probe:critical:count", "{}"),
            ],
            "the alert's series, then the recording rule's sample"
        );
        // Still pending at 30 s: nothing changes, nothing is written.
        assert!(step(&mut e, 30_000, &src, &[]).updates.is_empty());
        // `for: 1m` has passed: firing, one notification to ops.
        let out = step(&mut e, 60_000, &src, &[]);
        let update = &out.updates[0];
        assert_eq!(update.alerts[0].state, AlertState::Firing);
        assert_eq!(update.notifications.len(), 1);
        let payload: serde_json::Value =
            serde_json::from_str(&update.notifications[0].payload).expect("json");
        assert_eq!(payload["status"], "firing");
        assert_eq!(payload["alerts"][0]["labels"]["alertname"], "CheckCritical");
        assert_eq!(
            payload["alerts"][0]["annotations"]["summary"],
            "login is critical (2)"
        );
        assert_eq!(payload["groupLabels"]["alertname"], "CheckCritical");
        // Condition gone at 90 s, but keep_firing_for 30 s keeps it firing until 120 s.
        let out = step(&mut e, 90_000, &src, &[]);
        assert_eq!(e.alerts(&key)[0].state, AlertState::Firing);
        assert!(out.updates.iter().all(|u| u.notifications.is_empty()));
        let out = step(&mut e, 120_000, &src, &[]);
        let update = &out.updates[0];
        assert!(update.alerts.is_empty());
        let payload: serde_json::Value =
            serde_json::from_str(&update.notifications[0].payload).expect("json");
        assert_eq!(payload["status"], "resolved");
        assert_eq!(update.events[0].event, "resolved");
    }

    #[test]
    fn alertmanager_is_told_firing_alerts_ahead_and_resolved_ones_for_15_minutes() {
        let mut e = engine(Vec::new());
        let src = source(&[(0, 2.0), (60_000, 2.0), (90_000, 0.0)]);
        step(&mut e, 0, &src, &[]);
        // Pending alerts are not sent.
        assert!(
            e.snapshot()
                .alertmanager_alerts("ops", 0, 240_000, &[])
                .is_empty()
        );
        step(&mut e, 60_000, &src, &[]);
        let sent = e
            .snapshot()
            .alertmanager_alerts("ops", 70_000, 240_000, &[]);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0]["labels"]["alertname"], "CheckCritical");
        assert_eq!(sent[0]["startsAt"], "1970-01-01T00:01:00Z");
        assert_eq!(
            sent[0]["endsAt"], "1970-01-01T00:05:10Z",
            "valid 4 minutes on"
        );
        assert!(
            e.snapshot()
                .alertmanager_alerts("other", 70_000, 240_000, &[])
                .is_empty()
        );
        let silence = Silence {
            id: 1,
            matchers: vec![Matcher::new("check", "=", "login").expect("matcher")],
            spare: None,
        };
        assert!(
            e.snapshot()
                .alertmanager_alerts("ops", 70_000, 240_000, &[silence])
                .is_empty(),
            "silenced here, so not sent"
        );
        step(&mut e, 90_000, &src, &[]);
        step(&mut e, 120_000, &src, &[]);
        let sent = e
            .snapshot()
            .alertmanager_alerts("ops", 130_000, 240_000, &[]);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(
            sent[0]["endsAt"], "1970-01-01T00:02:00Z",
            "ends when it resolved"
        );
        let late = 120_000 + RESOLVED_RETENTION_MS + 1;
        assert!(
            e.snapshot()
                .alertmanager_alerts("ops", late, 240_000, &[])
                .is_empty(),
            "forgotten after 15 minutes"
        );
    }

    #[test]
    fn restored_state_keeps_pending_time_and_does_not_renotify() {
        let mut e = engine(Vec::new());
        let src = source(&[(0, 2.0), (30_000, 2.0), (60_000, 2.0), (90_000, 2.0)]);
        let saved = step(&mut e, 0, &src, &[]).updates[0].alerts.clone();
        // "Restart": a new engine from what was saved; `for` counts from the first evaluation.
        let mut e = engine(saved);
        let out = step(&mut e, 60_000, &src, &[]);
        assert_eq!(
            out.updates[0].notifications.len(),
            1,
            "fires at 60 s, not 120 s"
        );
        let saved = out.updates[0].alerts.clone();
        let mut e = engine(saved);
        let out = step(&mut e, 90_000, &src, &[]);
        assert!(
            out.updates.is_empty(),
            "already notified: no repeat before repeat_interval"
        );
    }

    #[test]
    fn a_silenced_alert_is_announced_when_the_silence_ends_and_only_then_resolved() {
        let mut e = engine(Vec::new());
        let src = source(&[(0, 2.0), (60_000, 2.0), (120_000, 2.0), (180_000, 0.0)]);
        let silence = crate::silence::active_silences(
            &[probewatch_store::SilenceRow {
                id: 1,
                matchers: vec!["check=\"login\"".into()],
                starts_at_ms: 0,
                ends_at_ms: 100_000,
                created_by: "me".into(),
                comment: "maintenance".into(),
                created_at_ms: 0,
                expired_at_ms: None,
                acknowledgement: false,
            }],
            60_000,
        );
        assert_eq!(silence.len(), 1);
        step(&mut e, 0, &src, &silence);
        let out = step(&mut e, 60_000, &src, &silence);
        assert!(
            out.updates.iter().all(|u| u.notifications.is_empty()),
            "silenced: fired but not notified"
        );
        let out = step(&mut e, 120_000, &src, &[]);
        assert_eq!(
            out.updates[0].notifications.len(),
            1,
            "announced once the silence ended"
        );
        // Silenced again when it resolves: no resolved message either.
        let out = step(&mut e, 240_000, &src, &silence);
        assert!(out.updates.iter().all(|u| u.notifications.is_empty()));
    }
}
