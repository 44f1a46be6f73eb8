//! The HTTP side of probewatch: the JSON API and `/metrics`.
//!
//! The only crate that knows HTTP and JSON shapes. Handlers read the [`Store`] on blocking
//! threads (SQLite calls block) and convert store rows into the API's own types here, so the
//! store and core types stay free of serialisation concerns.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use probewatch_core::Status;
use probewatch_store::{HistoryQuery, Outcome, Store, StoreError};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

pub mod access;
pub mod agent_api;
mod alerts_page;
mod availability;
mod check_page;
mod check_state;
mod graph_page;
mod history;
mod ingest_page;
mod notifications_page;
mod overview_page;
mod prom_api;
pub mod query_gate;
pub mod receivers_api;
mod rules_api;
mod rules_page;
mod serve;
pub mod silences_api;
mod static_files;
pub mod status_api;
pub mod status_page;

pub use overview_page::OVERVIEW_PAGE;
pub use serve::{ServeLimits, serve};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// probewatch's own metrics, rendered by `/metrics`.
    pub registry: Arc<Registry>,
    /// Series labels for PromQL queries, shared by every request.
    pub index: Arc<probewatch_store::SeriesIndex>,
    /// PromQL engine settings.
    pub query_options: probewatch_promql::QueryOptions,
    /// Limits how many queries run at once, and cancels them at shutdown.
    pub queries: Arc<query_gate::QueryGate>,
    /// What the rule engine publishes, for `/api/v1/rules`, `/api/v1/alerts` and the pages
    /// (absent in tools that serve no rules). Read without waiting for an evaluation.
    pub alerting: Option<Arc<probewatch_alerting::SnapshotCell>>,
    /// Token that state-changing endpoints (silences) require; none: they are refused.
    pub api_token: Option<Arc<str>>,
    /// Who may use the dashboard and API at all; none: anyone who can connect.
    pub access: Option<Arc<access::Access>>,
    /// What the daemon knows of itself beyond the store, for `/-/ready`, `/ingest` and
    /// `/api/v1/files` (none: a tool that runs no pipeline; always ready).
    pub status: Option<Arc<dyn DaemonStatus>>,
    /// Re-reads the configuration and rules (`POST /-/reload`); none: not offered.
    pub reload: Option<Arc<dyn Reload>>,
    /// What the status endpoints report about the process and its configuration.
    pub info: Arc<status_api::ServerInfo>,
    /// Takes results sent by agents and push clients (none: those endpoints answer 404).
    pub remote: Option<Arc<dyn agent_api::RemoteIngest>>,
    /// The configured receivers, listed and tested (none: a tool that sends nothing).
    pub receivers: Option<Arc<dyn receivers_api::Receivers>>,
    /// Maintenance windows (none: a tool without them).
    pub maintenance: Option<Arc<probewatch_alerting::maintenance::Windows>>,
    /// Inhibition rules (none: a tool without them).
    pub inhibitions: Option<Arc<probewatch_alerting::inhibit::Inhibitions>>,
    /// The status page and the pages' time zone, replaced by a configuration reload.
    pub pages: Arc<PageSettingsCell>,
}

impl AppState {
    /// The zone pages show times in (UTC unless configured), as configured now.
    pub fn time_zone(&self) -> jiff::tz::TimeZone {
        self.pages.load().time_zone.clone()
    }

    /// The public status page as configured now (none: `/status` and the badges answer 404).
    pub fn status_page(&self) -> Option<Arc<status_page::StatusPage>> {
        self.pages.load().status_page.clone()
    }
}

/// How pages present what they show: settings a reload may change while requests read them.
#[derive(Debug, Clone)]
pub struct PageSettings {
    /// The public status page (none: `/status` and the badges answer 404).
    pub status_page: Option<Arc<status_page::StatusPage>>,
    /// The zone pages show times in (UTC unless configured).
    pub time_zone: jiff::tz::TimeZone,
}

impl Default for PageSettings {
    /// No status page; times in UTC.
    fn default() -> Self {
        PageSettings {
            status_page: None,
            time_zone: jiff::tz::TimeZone::UTC,
        }
    }
}

/// The page settings in use, shared by every request and replaced whole by a reload (a
/// request sees the old settings or the new, never a mix).
#[derive(Debug, Default)]
pub struct PageSettingsCell(std::sync::RwLock<Arc<PageSettings>>);

impl PageSettingsCell {
    /// A cell holding `settings`.
    pub fn new(settings: PageSettings) -> PageSettingsCell {
        PageSettingsCell(std::sync::RwLock::new(Arc::new(settings)))
    }

    /// The settings now.
    pub fn load(&self) -> Arc<PageSettings> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Takes a reloaded configuration's settings.
    pub fn replace(&self, settings: PageSettings) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(settings);
    }
}

/// Configuration reload, as the daemon offers it (SIGHUP does the same).
pub trait Reload: Send + Sync {
    /// Re-reads the configuration and applies what can change while running; on error the
    /// running configuration stays and the error says why.
    fn reload(&self) -> Result<(), String>;

    /// How the last reload went.
    fn status(&self) -> ReloadStatus;
}

/// The outcome of the last configuration reload (or of the start).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    /// Whether the last attempt succeeded.
    pub successful: bool,
    /// When the configuration in use was loaded (ms since the epoch).
    pub last_success_ms: i64,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
}

/// What the running daemon (not the store) knows of itself.
pub trait DaemonStatus: Send + Sync {
    /// Every reason the daemon cannot do its job now, one sentence each (empty: ready).
    fn problems(&self) -> Vec<String>;

    /// Files that could not be opened or read, with why; each is retried with backoff.
    fn unreadable_files(&self) -> Vec<UnreadableFile>;
}

/// A file the ingest pipeline could not open or read (permissions, too many open files, a
/// path too long), waiting for its next attempt.
#[derive(Debug, Clone, Serialize)]
pub struct UnreadableFile {
    /// The file.
    pub path: String,
    /// Its spool.
    pub spool: String,
    /// Why the last attempt failed.
    pub error: String,
    /// Attempts so far.
    pub attempts: u32,
    /// When the first attempt failed (ms).
    pub since_ms: i64,
    /// When the next attempt is due (ms).
    pub next_attempt_ms: i64,
}

/// An API error: a status code and a message for the client; details go to the log.
#[derive(Debug)]
pub enum ApiError {
    /// The request is wrong (bad parameter).
    BadRequest(String),
    /// What the request names does not exist.
    NotFound(String),
    /// The store failed.
    Store(StoreError),
    /// A blocking task panicked or was cancelled.
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, message),
            ApiError::Store(StoreError::Unreachable(reason)) => {
                tracing::warn!(error = %reason, "the store is unreachable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store is unreachable now; try again shortly".to_string(),
                )
            }
            ApiError::Store(err) => {
                tracing::error!(error = %err, "store error while serving a request");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store error; see the server log".to_string(),
                )
            }
            ApiError::Internal(message) => {
                tracing::error!(error = %message, "internal error while serving a request");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the server log".to_string(),
                )
            }
        };
        (status, Json(ErrorBody { error: message })).into_response()
    }
}

/// An [`ApiError`] shown as a dashboard page (people follow links to pages; a JSON error
/// body would be unreadable there), with the same status code.
pub(crate) struct PageError(pub ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> PageError {
        PageError(e)
    }
}

#[derive(askama::Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    page: &'static str,
    title: &'a str,
    message: &'a str,
    /// Reload the page after this many seconds (a condition that passes by itself).
    reload_after: Option<u32>,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message, reload_after) = match self.0 {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m, None),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m, None),
            ApiError::Store(StoreError::Unreachable(reason)) => {
                tracing::warn!(error = %reason, "the store is unreachable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The store is unreachable",
                    format!(
                        "probewatch cannot reach its store now ({reason}). It keeps trying by \
                         itself, and result files wait in the spool until their results are \
                         stored; this page reloads every 10 seconds."
                    ),
                    Some(10),
                )
            }
            other => {
                // Logged by ApiError's own response; the page says where to look.
                let status = other.into_response().status();
                (
                    status,
                    "Something went wrong",
                    "This page could not be made; the server's log says why.".to_string(),
                    None,
                )
            }
        };
        let page = ErrorPage {
            page: "",
            title,
            message: &message,
            reload_after,
        };
        match askama::Template::render(&page) {
            Ok(html) => (status, axum::response::Html(html)).into_response(),
            Err(_) => (status, message).into_response(),
        }
    }
}

/// The router with every endpoint.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(overview_page::overview))
        .route("/alerts", get(alerts_page::alerts))
        .route("/rules", get(rules_page::rules))
        .route("/ingest", get(ingest_page::ingest))
        .route("/agents", get(ingest_page::agents))
        .route("/notifications", get(notifications_page::notifications))
        .route("/status", get(status_page::page))
        .route("/badge/{group}/{kind}", get(status_page::badge_svg))
        .route("/static/app.css", get(static_files::css))
        .route("/static/app.js", get(static_files::js))
        .route("/static/plotly.min.js", get(static_files::plotly_js))
        .route("/favicon.ico", get(static_files::favicon))
        .route("/check", get(check_page::check_page))
        .route("/graph", get(graph_page::graph_page))
        .route("/api/v1/checks/durations", get(check_page::durations))
        .route("/healthz", get(healthz))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload).put(reload))
        .route("/metrics", get(metrics))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/checks", get(checks))
        .route("/api/v1/checks/history", get(history))
        .route("/api/v1/availability", get(availability::availability))
        .route("/api/v1/files", get(files))
        .route("/api/v1/query", get(prom_api::query).post(prom_api::query))
        .route(
            "/api/v1/query_range",
            get(prom_api::query_range).post(prom_api::query_range),
        )
        .route(
            "/api/v1/series",
            get(prom_api::series).post(prom_api::series),
        )
        .route(
            "/api/v1/labels",
            get(prom_api::labels).post(prom_api::labels),
        )
        .route("/api/v1/label/{name}/values", get(prom_api::label_values))
        .route("/api/v1/status/buildinfo", get(prom_api::buildinfo))
        .route("/api/v1/status/config", get(status_api::config))
        .route("/api/v1/status/flags", get(status_api::flags))
        .route("/api/v1/status/runtimeinfo", get(status_api::runtimeinfo))
        .route("/api/v1/status/tsdb", get(status_api::tsdb))
        .route("/api/v1/status/cluster", get(status_api::cluster))
        .route("/api/v1/metadata", get(status_api::metadata))
        .route(
            "/api/v1/query_exemplars",
            get(status_api::query_exemplars).post(status_api::query_exemplars),
        )
        .route(
            "/api/v1/format_query",
            get(status_api::format_query).post(status_api::format_query),
        )
        .route("/api/v1/targets", get(status_api::targets))
        .route("/api/v1/alertmanagers", get(status_api::alertmanagers))
        .route("/api/v1/rules", get(rules_api::rules))
        .route("/api/v1/alerts", get(rules_api::alerts))
        .route(
            "/api/v1/alerts/acknowledge",
            post(silences_api::acknowledge),
        )
        .route("/api/v1/notifications", get(rules_api::notifications))
        .route("/api/v1/receivers", get(receivers_api::list))
        .route("/api/v1/receivers/{name}/test", post(receivers_api::test))
        .route(
            "/api/v1/silences",
            get(silences_api::list).post(silences_api::create),
        )
        .route("/api/v1/silences/preview", get(silences_api::preview))
        .route("/api/v1/maintenance", get(silences_api::maintenance))
        .route(
            "/api/v1/silences/{id}",
            axum::routing::delete(silences_api::expire),
        )
        .route(
            "/api/v1/agent/ingest",
            post(agent_api::ingest).layer(axum::extract::DefaultBodyLimit::max(
                agent_api::MAX_BODY_BYTES,
            )),
        )
        .route(
            "/api/v1/push",
            post(agent_api::push).layer(axum::extract::DefaultBodyLimit::max(
                agent_api::MAX_BODY_BYTES,
            )),
        )
        .route("/api/v1/agents", get(agent_api::agents))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::require,
        ))
        // Pages and JSON shrink 5-8 times for clients that accept gzip (browsers,
        // Prometheus, Grafana); the fastest level keeps the CPU cost to a few ms a page.
        // plotly.js arrives already gzipped and is left alone.
        .layer(
            tower_http::compression::CompressionLayer::new()
                .quality(tower_http::CompressionLevel::Fastest),
        )
        .with_state(state)
}

/// Runs a store read on the blocking pool. A read that found the database unreachable at
/// once is tried once more: a connection that broke when the database restarted fails its
/// first use, and the next one is fresh. One that took a while (no connection came while
/// the database is away) is not: it would only take as long again before saying so.
async fn read<T: Send + 'static>(
    state: &AppState,
    f: impl Fn(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        match f(store.as_ref()) {
            Err(StoreError::Unreachable(_)) if started.elapsed() < RETRY_ONLY_FAILURES_WITHIN => {
                f(store.as_ref())
            }
            done => done,
        }
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(ApiError::Store)
}

/// How soon a read must have failed for [`read`] to try it again.
const RETRY_ONLY_FAILURES_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Liveness, as Prometheus answers it: the process serves HTTP.
async fn healthy() -> &'static str {
    "probewatch is Healthy.\n"
}

/// Readiness: 200 when the daemon can do its job, 503 with every reason it cannot (the store
/// cannot commit, ingest is stalled or stopped, a spool is not watched).
async fn ready(State(state): State<AppState>) -> Response {
    let mut problems = match &state.status {
        Some(status) => {
            let status = status.clone();
            tokio::task::spawn_blocking(move || status.problems())
                .await
                .unwrap_or_else(|e| vec![format!("readiness check failed: {e}")])
        }
        None => Vec::new(),
    };
    if let Err(err) = read(&state, |store| store.stats()).await {
        let why = match err {
            ApiError::Store(err) => err.to_string(),
            other => format!("{other:?}"),
        };
        problems.push(format!("store: cannot read: {why}"));
    }
    if problems.is_empty() {
        (StatusCode::OK, "probewatch is Ready.\n").into_response()
    } else {
        let mut body = String::from("probewatch is not ready:\n");
        for p in problems {
            body.push_str(&format!("- {p}\n"));
        }
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

/// `POST /-/reload`, as Prometheus answers it: 200 and nothing on success; 500 with the
/// reason when the new configuration was refused (the old one keeps running).
async fn reload(State(state): State<AppState>) -> Response {
    let Some(reloader) = state.reload.clone() else {
        return (
            StatusCode::NOT_FOUND,
            "configuration reload is not offered here\n",
        )
            .into_response();
    };
    match tokio::task::spawn_blocking(move || reloader.reload()).await {
        Ok(Ok(())) => StatusCode::OK.into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {e}\n"),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {e}\n"),
        )
            .into_response(),
    }
}

async fn healthz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    read(&state, |store| store.stats()).await?;
    Ok("ok\n")
}

async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    // Some collectors read the store (the outbox's counts), and a store's client may block
    // on its own runtime (PostgreSQL's): encode off the server's threads, as every other
    // store read here is. Encoded on this thread, the first scrape of a server on
    // PostgreSQL aborted the process ("Cannot start a runtime from within a runtime").
    let registry = state.registry.clone();
    let body = tokio::task::spawn_blocking(move || {
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &registry).map(|()| body)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("encoding the metrics: {e}")))?
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

#[derive(Serialize)]
struct StatsBody {
    files_ingested: u64,
    files_rejected: u64,
    check_results: u64,
    samples: u64,
    series: u64,
}

async fn stats(State(state): State<AppState>) -> Result<Json<StatsBody>, ApiError> {
    let s = read(&state, |store| store.stats()).await?;
    Ok(Json(StatsBody {
        files_ingested: s.files_ingested,
        files_rejected: s.files_rejected,
        check_results: s.check_results,
        samples: s.samples,
        series: s.series,
    }))
}

/// A time in ms as RFC 3339 (the raw number if it is out of range).
pub(crate) fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

pub(crate) use probewatch_core::now_ms;

/// A status code's name (`ok` … `unknown`), which is also its CSS class.
pub(crate) fn status_word(code: u8) -> &'static str {
    Status::from_code(i64::from(code)).map_or("unknown", Status::as_str)
}

/// The fields every check result carries in the API, latest or historic.
#[derive(Serialize)]
struct ResultFields {
    status: &'static str,
    status_code: u8,
    time: String,
    time_ms: i64,
    duration_seconds: Option<f64>,
    message: String,
}

impl ResultFields {
    fn new(status_code: u8, time_ms: i64, duration_seconds: Option<f64>, message: String) -> Self {
        ResultFields {
            status: status_word(status_code),
            status_code,
            time: rfc3339(time_ms),
            time_ms,
            duration_seconds,
            message,
        }
    }
}

#[derive(Serialize)]
struct CheckBody {
    probe: String,
    host: String,
    check: String,
    #[serde(flatten)]
    result: ResultFields,
    interval_seconds: Option<f64>,
    /// What the dashboard shows: the status, or `stale` (nothing for three expected
    /// intervals), or `offline` (stale, and its host's agent is offline).
    state: &'static str,
    /// Whether no result came for three expected intervals.
    stale: bool,
    /// When the state began: the first result of the current status, or for a stale check
    /// its last result.
    since: String,
    since_ms: i64,
    /// The interval the check is expected at: declared, else learnt from its results.
    expected_interval_seconds: Option<f64>,
}

/// `GET /api/v1/checks?status=&probe=&host=`
#[derive(Deserialize)]
struct ChecksParams {
    /// `ok`, `warning`, `critical`, `unknown`, `stale`, `offline`, or `problem` (not ok).
    status: Option<String>,
    probe: Option<String>,
    host: Option<String>,
}

#[derive(Serialize)]
struct ChecksBody {
    checks: Vec<CheckBody>,
}

/// Every check's latest result and state, optionally only those in one state (as the
/// overview's filter says it) or of one probe or host.
async fn checks(
    State(state): State<AppState>,
    Query(params): Query<ChecksParams>,
) -> Result<Json<ChecksBody>, ApiError> {
    let wanted = params.status.as_deref().unwrap_or("");
    if ![
        "",
        "problem",
        "ok",
        "warning",
        "critical",
        "unknown",
        "stale",
        "offline",
        "maintenance",
    ]
    .contains(&wanted)
    {
        return Err(ApiError::BadRequest(format!(
            "status={wanted:?}: expected ok, warning, critical, unknown, stale, offline, \
             maintenance or problem"
        )));
    }
    let now = now_ms();
    let context = check_state::StateContext::of(&state, now);
    let rows = read(&state, |store| store.latest_checks()).await?;
    let checks = rows
        .into_iter()
        .filter(|r| params.probe.as_ref().is_none_or(|p| *p == r.probe))
        .filter(|r| params.host.as_ref().is_none_or(|h| *h == r.host))
        .filter_map(|r| {
            let (shown, _) = check_state::shown_state(&r, now, &context);
            let keep = match wanted {
                "" => true,
                "problem" => check_state::is_problem(shown),
                s => s == shown,
            };
            if !keep {
                return None;
            }
            let since_ms = check_state::since_ms(&r, shown);
            Some(CheckBody {
                state: shown,
                stale: matches!(shown, "stale" | "offline"),
                since: rfc3339(since_ms),
                since_ms,
                expected_interval_seconds: r.expected_interval_ms().map(|ms| ms as f64 / 1000.0),
                result: ResultFields::new(r.status, r.time_ms, r.duration_seconds, r.message),
                interval_seconds: r.interval_ms.map(|ms| ms as f64 / 1000.0),
                probe: r.probe,
                host: r.host,
                check: r.check,
            })
        })
        .collect();
    Ok(Json(ChecksBody { checks }))
}

/// Parses a time parameter: RFC 3339 or Unix seconds, as result files write them.
fn parse_time(name: &str, value: &str) -> Result<i64, ApiError> {
    probewatch_core::parse_time_ms(value).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{name}={value:?}: expected RFC 3339 or Unix seconds"
        ))
    })
}

#[derive(Deserialize)]
struct HistoryParams {
    probe: Option<String>,
    check: Option<String>,
    host: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct HistoryEntry {
    host: String,
    #[serde(flatten)]
    result: ResultFields,
}

#[derive(Serialize)]
struct HistoryBody {
    probe: String,
    check: String,
    from: String,
    to: String,
    results: Vec<HistoryEntry>,
}

async fn history(
    State(state): State<AppState>,
    Query(params): Query<HistoryParams>,
) -> Result<Json<HistoryBody>, ApiError> {
    let probe = params
        .probe
        .ok_or_else(|| ApiError::BadRequest("probe= is required".into()))?;
    let check = params
        .check
        .ok_or_else(|| ApiError::BadRequest("check= is required".into()))?;
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let to_ms = params
        .to
        .as_deref()
        .map(|v| parse_time("to", v))
        .transpose()?
        .unwrap_or(now_ms);
    let from_ms = params
        .from
        .as_deref()
        .map(|v| parse_time("from", v))
        .transpose()?
        .unwrap_or(to_ms - 86_400_000);
    if from_ms > to_ms {
        return Err(ApiError::BadRequest("from is after to".into()));
    }
    let query = HistoryQuery {
        probe: probe.clone(),
        check: check.clone(),
        host: params.host,
        from_ms,
        to_ms,
        limit: params.limit.unwrap_or(10_000).min(100_000),
        newest_first: false,
    };
    let rows = read(&state, move |store| store.check_history(&query)).await?;
    let results = rows
        .into_iter()
        .map(|r| HistoryEntry {
            result: ResultFields::new(r.status, r.time_ms, r.duration_seconds, r.message),
            host: r.host,
        })
        .collect();
    Ok(Json(HistoryBody {
        probe,
        check,
        from: rfc3339(from_ms),
        to: rfc3339(to_ms),
        results,
    }))
}

#[derive(Deserialize)]
struct FilesParams {
    status: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct FileEntry {
    path: String,
    spool: String,
    status: &'static str,
    reason: Option<String>,
    error: Option<String>,
    time: String,
    size: u64,
    samples: u64,
    clock_skew: bool,
}

#[derive(Serialize)]
struct FilesBody {
    files: Vec<FileEntry>,
}

async fn files(
    State(state): State<AppState>,
    Query(params): Query<FilesParams>,
) -> Result<Response, ApiError> {
    if params.status.as_deref() == Some("unreadable") {
        let files = state
            .status
            .as_ref()
            .map(|s| s.unreadable_files())
            .unwrap_or_default();
        let files: Vec<serde_json::Value> = files
            .into_iter()
            .map(|f| {
                serde_json::json!({
                    "path": f.path,
                    "spool": f.spool,
                    "status": "unreadable",
                    "error": f.error,
                    "attempts": f.attempts,
                    "since": rfc3339(f.since_ms),
                    "nextAttempt": rfc3339(f.next_attempt_ms),
                })
            })
            .collect();
        return Ok(Json(serde_json::json!({ "files": files })).into_response());
    }
    let outcome = match params.status.as_deref() {
        None | Some("all") => None,
        Some(name) => Some(Outcome::from_name(name).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "status={name:?}: expected ingested, rejected, unreadable or all"
            ))
        })?),
    };
    let limit = params.limit.unwrap_or(1000).min(100_000);
    let rows = read(&state, move |store| store.files(outcome, limit)).await?;
    let files = rows
        .into_iter()
        .map(|r| FileEntry {
            // File names need not be UTF-8; invalid bytes show as U+FFFD.
            path: Path::new(std::ffi::OsStr::from_bytes(&r.path))
                .to_string_lossy()
                .into_owned(),
            spool: r.spool,
            status: r.outcome.as_str(),
            reason: r.reject_kind,
            error: r.error,
            time: rfc3339(r.ingested_at_ms),
            size: r.size,
            samples: r.samples,
            clock_skew: r.clock_skew,
        })
        .collect();
    Ok(Json(FilesBody { files }).into_response())
}
