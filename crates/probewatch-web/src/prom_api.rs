//! The Prometheus-compatible query API (`/api/v1/query`, `query_range`, `series`, `labels`,
//! `label/<name>/values`), so Grafana's Prometheus data source and other PromQL clients can
//! read probewatch. Parameters come from the query string or a form-encoded POST body, as
//! Prometheus accepts them; errors use Prometheus's JSON shape.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use probewatch_promql::{QueryError, Value, format_value};
use serde_json::{Map, Value as Json, json};

use crate::AppState;

/// Request parameters, in order; repeated keys (`match[]`) are kept.
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn parse(query: Option<String>, headers: &HeaderMap, body: &Bytes) -> Params {
        let mut pairs: Vec<(String, String)> = query
            .as_deref()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if form {
            pairs.extend(form_urlencoded::parse(body).into_owned());
        }
        Params(pairs)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// An API failure in Prometheus's shape.
pub(crate) struct PromError {
    kind: &'static str,
    message: String,
}

impl PromError {
    pub(crate) fn bad_data(message: impl Into<String>) -> PromError {
        PromError {
            kind: "bad_data",
            message: message.into(),
        }
    }
}

impl From<QueryError> for PromError {
    fn from(err: QueryError) -> PromError {
        let kind = match err {
            QueryError::Parse(_) | QueryError::Unsupported(_) | QueryError::TooComplex(_) => {
                "bad_data"
            }
            QueryError::Execution(_) | QueryError::TooManySamples => "execution",
            QueryError::Timeout => "timeout",
            QueryError::Canceled => "canceled",
            QueryError::Storage(_) => "internal",
            QueryError::Unavailable(_) => "unavailable",
        };
        match kind {
            "internal" => tracing::error!(error = %err, "query failed reading the store"),
            "unavailable" => tracing::warn!(error = %err, "query found the store unreachable"),
            _ => {}
        }
        PromError {
            kind,
            message: err.to_string(),
        }
    }
}

impl IntoResponse for PromError {
    fn into_response(self) -> Response {
        // Prometheus's codes: 499 (client closed request) for a cancelled query.
        let status = match self.kind {
            "bad_data" => StatusCode::BAD_REQUEST,
            "execution" => StatusCode::UNPROCESSABLE_ENTITY,
            "timeout" | "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            "canceled" => StatusCode::from_u16(499).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = json!({"status": "error", "errorType": self.kind, "error": self.message});
        (status, axum::Json(body)).into_response()
    }
}

pub(crate) fn success(data: Json) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

/// `time`, `start`, `end`: RFC 3339 or Unix seconds with a fraction, between the years 1
/// and 9999 (so no sum of times and durations can overflow).
pub(crate) fn parse_time(name: &str, text: &str) -> Result<i64, PromError> {
    let ms = match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() => Some((seconds * 1000.0).round() as i64),
        _ => probewatch_core::parse_time_ms(text),
    }
    .ok_or_else(|| {
        PromError::bad_data(format!(
            "invalid parameter {name:?}: cannot parse {text:?} to a valid timestamp"
        ))
    })?;
    use probewatch_promql::limits::{MAX_TIME_MS, MIN_TIME_MS};
    if !(MIN_TIME_MS..=MAX_TIME_MS).contains(&ms) {
        return Err(PromError::bad_data(format!(
            "invalid parameter {name:?}: {text:?} is out of range: times must lie between \
             0001-01-01 and 9999-12-31"
        )));
    }
    Ok(ms)
}

/// Seconds as Prometheus writes them: `1700000029`, or `1700000029.5` with a fraction.
fn time_json(ms: i64) -> Json {
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

fn labels_json(labels: &probewatch_promql::Labels) -> Json {
    let mut map = Map::new();
    for (k, v) in labels.pairs() {
        map.insert(k.clone(), Json::String(v.clone()));
    }
    Json::Object(map)
}

fn value_json(value: &Value) -> Json {
    let point = |t: i64, v: f64| json!([time_json(t), format_value(v)]);
    match value {
        Value::Scalar(t, v) => json!({"resultType": "scalar", "result": point(*t, *v)}),
        Value::String(t, s) => json!({"resultType": "string", "result": [time_json(*t), s]}),
        Value::Vector(samples) => json!({
            "resultType": "vector",
            "result": samples.iter().map(|s| json!({
                "metric": labels_json(&s.labels),
                "value": point(s.t, s.v),
            })).collect::<Vec<_>>(),
        }),
        Value::Matrix(series) => json!({
            "resultType": "matrix",
            "result": series.iter().map(|s| json!({
                "metric": labels_json(&s.labels),
                "values": s.points.iter().map(|&(t, v)| point(t, v)).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }),
    }
}

/// `GET|POST /api/v1/query`
pub(crate) async fn query(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(raw, &headers, &body);
    let run = async {
        let text = params
            .get("query")
            .ok_or_else(|| PromError::bad_data("missing parameter \"query\""))?
            .to_string();
        let t = match params.get("time") {
            Some(t) => parse_time("time", t)?,
            None => crate::now_ms(),
        };
        let options = state.query_options;
        let value = crate::query_gate::run(&state, move |source, guard| {
            probewatch_promql::Query::parse(&text)?.instant_guarded(source, t, &options, guard)
        })
        .await?;
        Ok::<_, PromError>(success(value_json(&value)))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// Most points a range query may return per series, as in Prometheus.
const MAX_POINTS: i64 = 11_000;

/// `GET|POST /api/v1/query_range`
pub(crate) async fn query_range(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(raw, &headers, &body);
    let run = async {
        let need = |name: &str| {
            params
                .get(name)
                .ok_or_else(|| PromError::bad_data(format!("missing parameter {name:?}")))
        };
        let text = need("query")?.to_string();
        let start = parse_time("start", need("start")?)?;
        let end = parse_time("end", need("end")?)?;
        let step = probewatch_promql::parse_duration_ms(need("step")?)
            .map_err(|e| PromError::bad_data(format!("invalid parameter \"step\": {e}")))?;
        if step <= 0 {
            return Err(PromError::bad_data(
                "zero or negative query resolution step widths are not accepted. Try a positive integer",
            ));
        }
        if step > probewatch_promql::limits::MAX_DURATION_MS {
            return Err(PromError::bad_data(
                "invalid parameter \"step\": out of range: a step may be at most 292 years",
            ));
        }
        if end < start {
            return Err(PromError::bad_data(
                "end timestamp must not be before start time",
            ));
        }
        if (end - start) / step > MAX_POINTS {
            return Err(PromError::bad_data(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
            ));
        }
        let options = state.query_options;
        let value = crate::query_gate::run(&state, move |source, guard| {
            probewatch_promql::Query::parse(&text)?.range_guarded(
                source,
                (start, end, step),
                &options,
                guard,
            )
        })
        .await?;
        Ok(success(value_json(&value)))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// The selectors of `match[]` (one empty selector, every series, when there is none and
/// none is `required`) and the `start`..`end` range (default: all time) of a series, labels or
/// label values request.
fn selection(
    params: &Params,
    required: bool,
) -> Result<(Vec<Vec<probewatch_promql::Matcher>>, i64, i64), PromError> {
    let mut alternatives = Vec::new();
    let matches = params.all("match[]");
    if matches.is_empty() {
        if required {
            return Err(PromError::bad_data("no match[] parameter provided"));
        }
        alternatives.push(Vec::new());
    }
    for m in matches {
        alternatives.extend(probewatch_promql::parse_selector(m)?);
    }
    let start = match params.get("start") {
        Some(t) => parse_time("start", t)?,
        None => i64::MIN,
    };
    let end = match params.get("end") {
        Some(t) => parse_time("end", t)?,
        None => i64::MAX,
    };
    Ok((alternatives, start, end))
}

/// `limit` as Prometheus reads it on series, labels and label values: absent or 0 is none.
fn limit_param(params: &Params) -> Result<usize, PromError> {
    match params.get("limit") {
        None | Some("") => Ok(0),
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
            Ok(_) => Err(PromError::bad_data(
                "invalid parameter \"limit\": limit must be non-negative",
            )),
            Err(e) => Err(PromError::bad_data(format!(
                "invalid parameter \"limit\": cannot parse {text:?}: {e}"
            ))),
        },
    }
}

/// A list answer cut to `limit` (0: no limit), with Prometheus's warning when it was cut.
/// Serialized straight from the items: label values at 700,000 series are a 7 MB answer, and
/// going through a `serde_json::Value` per item first cost a copy of each.
fn success_limited<T: serde::Serialize>(mut items: Vec<T>, limit: usize) -> Response {
    #[derive(serde::Serialize)]
    struct ListAnswer<'a, T> {
        status: &'static str,
        data: &'a [T],
        #[serde(skip_serializing_if = "Option::is_none")]
        warnings: Option<[&'static str; 1]>,
    }
    let mut warnings = None;
    if limit > 0 && items.len() > limit {
        items.truncate(limit);
        warnings = Some(["results truncated due to limit"]);
    }
    axum::Json(ListAnswer {
        status: "success",
        data: &items,
        warnings,
    })
    .into_response()
}

/// `GET|POST /api/v1/series`
pub(crate) async fn series(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(raw, &headers, &body);
    let run = async {
        let limit = limit_param(&params)?;
        let (alternatives, start, end) = selection(&params, true)?;
        let series = crate::query_gate::run(&state, move |source, guard| {
            guard.check()?;
            source.series_labels(&alternatives, start, end)
        })
        .await?;
        Ok::<_, PromError>(success_limited(
            series.iter().map(labels_json).collect(),
            limit,
        ))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET|POST /api/v1/labels`
pub(crate) async fn labels(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(raw, &headers, &body);
    let run = async {
        let limit = limit_param(&params)?;
        let (alternatives, start, end) = selection(&params, false)?;
        let names = crate::query_gate::run(&state, move |source, guard| {
            guard.check()?;
            source.label_names(&alternatives, start, end)
        })
        .await?;
        Ok::<_, PromError>(success_limited(names, limit))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/label/<name>/values`
pub(crate) async fn label_values(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(raw, &headers, &body);
    let run = async {
        let limit = limit_param(&params)?;
        let (alternatives, start, end) = selection(&params, false)?;
        let values = crate::query_gate::run(&state, move |source, guard| {
            guard.check()?;
            source.label_values(&name, &alternatives, start, end)
        })
        .await?;
        Ok::<_, PromError>(success_limited(values, limit))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// The Prometheus release whose HTTP API and PromQL semantics probewatch implements. Grafana
/// reads `version` from buildinfo to choose its calls (below 2.24 it falls back to slower
/// `/api/v1/series` lookups), so this is what buildinfo reports; probewatch's own version is
/// beside it.
pub const PROMETHEUS_API_VERSION: &str = "3.0.0";

/// `GET /api/v1/status/buildinfo`: Grafana reads it to learn what it is talking to.
pub(crate) async fn buildinfo() -> Response {
    success(json!({
        "version": PROMETHEUS_API_VERSION,
        "probewatchVersion": env!("CARGO_PKG_VERSION"),
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
        "application": "probewatch",
    }))
}
