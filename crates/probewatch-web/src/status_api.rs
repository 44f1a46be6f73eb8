//! The rest of Prometheus's HTTP API that Grafana's Prometheus data source (and promtool,
//! and people) call besides queries: `/api/v1/metadata`, `query_exemplars`, `format_query`,
//! `status/{config,flags,runtimeinfo,tsdb}`, `targets` and `alertmanagers`. Each answers in
//! Prometheus's shape with what probewatch really has: its own series' types, no exemplars,
//! no scrape targets (probes push files), the Alertmanagers it sends to.

use std::collections::BTreeMap;
use std::sync::RwLock;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};

use crate::AppState;
use crate::prom_api::{Params, PromError, parse_time, success};

/// What the daemon tells the status endpoints about itself.
#[derive(Debug, Default)]
pub struct ServerInfo {
    /// When the process started (ms since the epoch).
    pub start_time_ms: i64,
    /// How long samples are kept, as Prometheus writes it (`90d`).
    pub storage_retention: String,
    /// The store in use, as it may be shown (a directory, or a URL without its password).
    pub store: String,
    /// Settings in Prometheus's flag names where one exists (`query.timeout`), else ours.
    pub flags: BTreeMap<String, String>,
    /// What a reload can change.
    pub settings: RwLock<ServerSettings>,
    /// Metric types and help texts as probes declared them.
    pub metadata: std::sync::Arc<MetricMetadata>,
}

/// Type, help and unit of metrics as probes declared them (`# TYPE`, `# HELP`, `# UNIT` in
/// Prometheus textfiles), for `/api/v1/metadata`: the last declaration wins. Bounded, so a
/// probe inventing names cannot grow it without end.
#[derive(Debug, Default)]
pub struct MetricMetadata {
    by_name: RwLock<std::collections::HashMap<String, (String, String, String)>>,
}

/// Most metric families whose metadata is kept.
const METADATA_FAMILIES: usize = 10_000;

impl MetricMetadata {
    /// Records what a file declared for family `name` (empty fields keep what was known).
    pub fn record(&self, name: &str, kind: &str, help: &str, unit: &str) {
        let mut map = self.by_name.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= METADATA_FAMILIES && !map.contains_key(name) {
            return;
        }
        let entry = map.entry(name.to_string()).or_default();
        for (slot, value) in [
            (&mut entry.0, kind),
            (&mut entry.1, help),
            (&mut entry.2, unit),
        ] {
            if !value.is_empty() {
                *slot = value.to_string();
            }
        }
    }

    /// The metadata of series `name`: its family's (`x_bucket`, `x_sum`, `x_count` and
    /// `x_total` belong to family `x`).
    fn get(&self, name: &str) -> Option<(String, String, String)> {
        let map = self.by_name.read().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = map.get(name) {
            return Some(found.clone());
        }
        ["_bucket", "_sum", "_count", "_total", "_created", "_info"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find_map(|family| map.get(family).cloned())
    }
}

/// The parts of [`ServerInfo`] a configuration reload replaces.
#[derive(Debug, Clone, Default)]
pub struct ServerSettings {
    /// The alerting configuration as a Prometheus configuration file would say it.
    pub config_yaml: String,
    /// Base URLs of the Alertmanagers alerts are sent to.
    pub alertmanagers: Vec<String>,
}

impl ServerInfo {
    fn settings(&self) -> ServerSettings {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| String::new(), |t| t.to_string())
}

/// A Prometheus-style optional integer parameter (`-1` when absent).
fn int_param(params: &Params, name: &str) -> Result<i64, PromError> {
    match params.get(name) {
        None | Some("") => Ok(-1),
        Some(text) => text
            .parse()
            .map_err(|_| PromError::bad_data(format!("{name} must be a number"))),
    }
}

/// Type and help of the series probewatch itself writes; other metrics are `unknown`.
const KNOWN_METRICS: [(&str, &str, &str); 4] = [
    (
        "probe_check_status",
        "gauge",
        "Status of a check as its probe reported it: 0 ok, 1 warning, 2 critical, 3 unknown.",
    ),
    (
        "probe_check_duration_seconds",
        "gauge",
        "How long a check took, as its probe reported it.",
    ),
    (
        "ALERTS",
        "gauge",
        "Alerts that are pending or firing, 1 per alert (written by the rule engine).",
    ),
    (
        "ALERTS_FOR_STATE",
        "gauge",
        "When each active alert became active, in Unix seconds (written by the rule engine).",
    ),
];

/// `GET /api/v1/metadata`: every metric name with its type (`unknown` unless probewatch knows
/// it), help and unit; `metric` picks one, `limit` caps the number of metrics.
pub(crate) async fn metadata(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(raw, &headers, &body);
    let run = async {
        let limit = int_param(&params, "limit")?;
        int_param(&params, "limit_per_metric")?;
        let metric = params.get("metric").map(String::from);
        let names = crate::query_gate::run(&state, move |source, guard| {
            guard.check()?;
            source.index().metric_names(source.store())
        })
        .await?;
        let mut out = serde_json::Map::new();
        for name in names {
            if metric.as_ref().is_some_and(|m| *m != name) {
                continue;
            }
            if limit >= 0 && i64::try_from(out.len()).unwrap_or(i64::MAX) >= limit {
                break;
            }
            let declared = state.info.metadata.get(&name);
            let (kind, help, unit) = match &declared {
                Some((k, h, u)) => (
                    if k.is_empty() { "unknown" } else { k.as_str() },
                    h.as_str(),
                    u.as_str(),
                ),
                None => KNOWN_METRICS
                    .iter()
                    .find(|(n, _, _)| *n == name)
                    .map_or(("unknown", "", ""), |(_, k, h)| (*k, *h, "")),
            };
            out.insert(name, json!([{ "type": kind, "help": help, "unit": unit }]));
        }
        Ok::<_, PromError>(success(Json::Object(out)))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET|POST /api/v1/query_exemplars`: probes report no exemplars, so the answer is empty,
/// after the same checks of `query`, `start` and `end` as Prometheus makes.
pub(crate) async fn query_exemplars(
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(raw, &headers, &body);
    let run = || {
        let start = params
            .get("start")
            .map(|t| parse_time("start", t))
            .transpose()?;
        let end = params
            .get("end")
            .map(|t| parse_time("end", t))
            .transpose()?;
        if let (Some(start), Some(end)) = (start, end)
            && end < start
        {
            return Err(PromError::bad_data(
                "end timestamp must not be before start timestamp",
            ));
        }
        probewatch_promql::Query::parse(params.get("query").unwrap_or_default())?;
        Ok(success(json!([])))
    };
    run().unwrap_or_else(IntoResponse::into_response)
}

/// `GET|POST /api/v1/format_query`: the query laid out as Prometheus lays it out.
pub(crate) async fn format_query(
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(raw, &headers, &body);
    match probewatch_promql::format_query(params.get("query").unwrap_or_default()) {
        Ok(text) => success(Json::String(text)),
        Err(e) => PromError::bad_data(format!("invalid parameter \"query\": {e}")).into_response(),
    }
}

/// `GET /api/v1/status/config`: the alerting configuration as a Prometheus configuration
/// file would say it (probewatch's own file is TOML and has more).
pub(crate) async fn config(State(state): State<AppState>) -> Response {
    success(json!({ "yaml": state.info.settings().config_yaml }))
}

/// `GET /api/v1/status/flags`
pub(crate) async fn flags(State(state): State<AppState>) -> Response {
    success(json!(state.info.flags))
}

/// `GET /api/v1/status/runtimeinfo`
pub(crate) async fn runtimeinfo(State(state): State<AppState>) -> Response {
    let reload = state.reload.as_ref().map(|r| r.status());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
    success(json!({
        "startTime": rfc3339(state.info.start_time_ms),
        "CWD": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
        "hostname": std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
        "serverTime": rfc3339(crate::now_ms()),
        "reloadConfigSuccess": reload.as_ref().is_none_or(|r| r.successful),
        "lastConfigTime": rfc3339(reload.map_or(state.info.start_time_ms, |r| r.last_success_ms)),
        "corruptionCount": 0,
        "goroutineCount": threads,
        "GOMAXPROCS": cores,
        "GOGC": "",
        "GODEBUG": "",
        "storageRetention": state.info.storage_retention,
    }))
}

/// `GET /api/v1/status/tsdb`: series and label cardinality from the series index, and where
/// the samples are (`limit`: how many of each top list, 1–10,000, default 10).
pub(crate) async fn tsdb(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(raw, &headers, &body);
    let run = async {
        let limit = match params.get("limit") {
            None | Some("") => 10,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=10_000).contains(&n) => n,
                Ok(n) if n > 10_000 => {
                    return Err(PromError::bad_data("limit must not exceed 10000"));
                }
                _ => return Err(PromError::bad_data("limit must be a positive number")),
            },
        };
        let (cardinality, span) = crate::query_gate::run(&state, move |source, guard| {
            guard.check()?;
            let cardinality = source.index().cardinality(source.store(), limit)?;
            let span = source
                .store()
                .sample_span()
                .map_err(probewatch_store::query::query_error)?;
            Ok((cardinality, span))
        })
        .await?;
        let stats = |list: &[(String, u64)]| -> Json {
            list.iter()
                .map(|(name, value)| json!({ "name": name, "value": value }))
                .collect()
        };
        let (min, max) = span.range_ms.unwrap_or((i64::MAX, i64::MIN));
        Ok::<_, PromError>(success(json!({
            "headStats": {
                "numSeries": cardinality.series,
                "numLabelPairs": cardinality.label_pairs,
                "chunkCount": span.chunks,
                "minTime": min,
                "maxTime": max,
            },
            "seriesCountByMetricName": stats(&cardinality.by_metric),
            "labelValueCountByLabelName": stats(&cardinality.values_by_label),
            "memoryInBytesByLabelName": stats(&cardinality.bytes_by_label),
            "seriesCountByLabelValuePair": stats(&cardinality.by_pair),
        })))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/targets`: probes push their results as files, so nothing is scraped.
pub(crate) async fn targets() -> Response {
    success(json!({
        "activeTargets": [],
        "droppedTargets": [],
        "droppedTargetCounts": {},
    }))
}

/// `GET /api/v1/alertmanagers`: the Alertmanagers alerts are pushed to.
pub(crate) async fn alertmanagers(State(state): State<AppState>) -> Response {
    let active: Vec<Json> = state
        .info
        .settings()
        .alertmanagers
        .iter()
        .map(|url| json!({ "url": format!("{}/api/v2/alerts", url.trim_end_matches('/')) }))
        .collect();
    success(json!({ "activeAlertmanagers": active, "droppedAlertmanagers": [] }))
}

/// How long ago a heartbeat may be for its server to count as a member.
const MEMBER_WITHIN_MS: i64 = 60_000;

/// `GET /api/v1/status/cluster`: the store in use, which server evaluates the rules (the
/// lease's holder and epoch) and each server's last heartbeat. On SQLite: this process.
pub(crate) async fn cluster(State(state): State<AppState>) -> Response {
    match crate::read(&state, |store| store.cluster(MEMBER_WITHIN_MS)).await {
        Ok(status) => success(cluster_json(&status, &state.info.store)),
        Err(err) => err.into_response(),
    }
}

/// The cluster status as the API and the ingest page show it.
pub(crate) fn cluster_json(status: &probewatch_store::ClusterStatus, store: &str) -> Json {
    let instances: Vec<Json> = status
        .instances
        .iter()
        .map(|i| {
            json!({
                "id": i.beat.id,
                "address": i.beat.address,
                "version": i.beat.version,
                "startedAt": rfc3339(i.beat.started_at_ms),
                "lastHeartbeatSecondsAgo": i.heartbeat_age_ms as f64 / 1000.0,
                "leader": status.leader.as_deref() == Some(i.beat.id.as_str()),
            })
        })
        .collect();
    json!({
        "store": { "backend": status.backend, "location": store },
        "leader": status.leader,
        "epoch": status.epoch,
        "leaseSecondsLeft": status.lease_left_ms.map(|ms| ms as f64 / 1000.0),
        "instances": instances,
    })
}
