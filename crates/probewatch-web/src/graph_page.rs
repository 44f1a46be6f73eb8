//! The metrics explorer (`/graph`), like Prometheus's graph page: a PromQL box with
//! completion of metric and label names, a chart of the expression over the chosen range
//! (drawn in the browser from `/api/v1/query_range`) and a table of its value at the end of
//! the range (evaluated here, so the table also works without JavaScript).

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use probewatch_promql::Value;
use serde::Deserialize;

use crate::history;
use crate::{ApiError, AppState};

/// `?expr=&range=&from=&to=`
#[derive(Debug, Default, Deserialize)]
pub(crate) struct GraphQuery {
    expr: Option<String>,
    range: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// One row of the result table.
struct ResultRow {
    labels: String,
    value: String,
}

#[derive(Template)]
#[template(path = "graph.html")]
struct GraphPage {
    page: &'static str,
    expr: String,
    ranges: Vec<history::RangeLink>,
    from_ms: i64,
    to_ms: i64,
    from_iso: String,
    to_iso: String,
    error: String,
    rows: Vec<ResultRow>,
    result_type: &'static str,
    /// The pages' time zone and its offset at the range's end (for the chart).
    zone: String,
    zone_offset_ms: i64,
}

/// Most rows the table shows.
const ROWS_SHOWN: usize = 500;

/// `GET /graph`
pub(crate) async fn graph_page(
    State(app): State<AppState>,
    Query(q): Query<GraphQuery>,
) -> Result<Response, crate::PageError> {
    let now = crate::now_ms();
    let expr = q.expr.clone().unwrap_or_default();
    let range = history::time_range(
        Some(q.range.as_deref().unwrap_or("1h")),
        q.from.as_deref(),
        q.to.as_deref(),
        now,
        &app.time_zone(),
    )
    .map_err(ApiError::BadRequest)?;
    let (mut rows, mut error, mut result_type) = (Vec::new(), String::new(), "");
    if !expr.trim().is_empty() {
        let (text, at, options) = (expr.clone(), range.to_ms, app.query_options);
        let value = crate::query_gate::run(&app, move |source, guard| {
            probewatch_promql::Query::parse(&text)?.instant_guarded(source, at, &options, guard)
        })
        .await;
        match value {
            Ok(value) => {
                result_type = value.type_name();
                rows = result_rows(&value);
            }
            Err(e) => error = e.to_string(),
        }
    }
    let ranges = history::range_links(&range.name, |name| {
        history::href("/graph", &[("expr", &expr), ("range", name)])
    });
    let html = GraphPage {
        page: "graph",
        expr,
        ranges,
        from_ms: range.from_ms,
        to_ms: range.to_ms,
        from_iso: crate::rfc3339(range.from_ms),
        to_iso: crate::rfc3339(range.to_ms),
        error,
        rows,
        result_type,
        zone: history::zone_name(&app.time_zone()),
        zone_offset_ms: history::zone_offset_ms(&app.time_zone(), range.to_ms),
    }
    .render()
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Html(html).into_response())
}

fn result_rows(value: &Value) -> Vec<ResultRow> {
    let fmt = probewatch_promql::format_value;
    match value {
        Value::Scalar(_, v) => vec![ResultRow {
            labels: "scalar".into(),
            value: fmt(*v),
        }],
        Value::String(_, s) => vec![ResultRow {
            labels: "string".into(),
            value: s.clone(),
        }],
        Value::Vector(samples) => samples
            .iter()
            .take(ROWS_SHOWN)
            .map(|s| ResultRow {
                labels: s.labels.to_string(),
                value: fmt(s.v),
            })
            .collect(),
        Value::Matrix(series) => series
            .iter()
            .take(ROWS_SHOWN)
            .map(|s| ResultRow {
                labels: s.labels.to_string(),
                value: s
                    .points
                    .iter()
                    .map(|(t, v)| format!("{} @{}", fmt(*v), *t as f64 / 1000.0))
                    .collect::<Vec<_>>()
                    .join("\n"),
            })
            .collect(),
    }
}
