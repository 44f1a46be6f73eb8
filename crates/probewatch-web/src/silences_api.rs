//! Silences over HTTP: `GET /api/v1/silences`, `POST /api/v1/silences`,
//! `DELETE /api/v1/silences/<id>`. Changing silences needs the API token from the
//! configuration (`Authorization: Bearer <token>`) or a logged-in `[access]` user (see
//! [`crate::access::authorize_write`]); with neither configured it is refused.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use probewatch_store::SilenceRow;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::AppState;
use crate::access::authorize_write;

fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = json!({"status": "error", "errorType": kind, "error": message.into()});
    (status, axum::Json(body)).into_response()
}

fn success(data: Json) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

/// A silence in the API's JSON shape, with its status at `now`.
pub fn silence_json(s: &SilenceRow, now: i64) -> Json {
    let status = if s.expired_at_ms.is_some_and(|e| e <= now) || s.ends_at_ms <= now {
        "expired"
    } else if s.starts_at_ms > now {
        "pending"
    } else {
        "active"
    };
    json!({
        "id": s.id,
        "matchers": s.matchers,
        "startsAt": crate::rfc3339(s.starts_at_ms),
        "endsAt": crate::rfc3339(s.expired_at_ms.map_or(s.ends_at_ms, |e| e.min(s.ends_at_ms))),
        "createdBy": s.created_by,
        "comment": s.comment,
        "createdAt": crate::rfc3339(s.created_at_ms),
        "status": status,
        "acknowledgement": s.acknowledgement,
    })
}

/// `GET /api/v1/silences`
pub(crate) async fn list(State(state): State<AppState>) -> Response {
    match crate::read(&state, |store| store.silences()).await {
        Ok(rows) => {
            let now = crate::now_ms();
            success(Json::Array(
                rows.iter().map(|s| silence_json(s, now)).collect(),
            ))
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewSilence {
    matchers: Vec<String>,
    starts_at: Option<String>,
    ends_at: Option<String>,
    /// Alternative to `endsAt`: `2h`, `30m`.
    duration: Option<String>,
    /// Defaults to the logged-in user (`api` for the token).
    #[serde(default)]
    created_by: String,
    comment: String,
}

/// `POST /api/v1/silences` with a JSON body.
pub(crate) async fn create(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = match authorize_write(&state, &method, &headers, "changing silences") {
        Ok(caller) => caller,
        Err(response) => return *response,
    };
    let request: NewSilence = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                format!("invalid silence: {e}"),
            );
        }
    };
    let row = match probewatch_alerting::silence::new_silence(
        request.matchers,
        request.starts_at.as_deref(),
        request.ends_at.as_deref(),
        request.duration.as_deref(),
        if request.created_by.trim().is_empty() {
            caller
        } else {
            request.created_by
        },
        request.comment,
        crate::now_ms(),
    ) {
        Ok(row) => row,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_data", e),
    };
    match crate::read(&state, move |store| store.add_silence(&row)).await {
        Ok(id) => success(json!({ "silenceID": id })),
        Err(e) => e.into_response(),
    }
}

/// `DELETE /api/v1/silences/<id>`: expires it now.
pub(crate) async fn expire(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    let caller = match authorize_write(&state, &method, &headers, "changing silences") {
        Ok(caller) => caller,
        Err(response) => return *response,
    };
    match crate::read(&state, move |store| {
        store.expire_silence(id, crate::now_ms(), &caller)
    })
    .await
    {
        Ok(true) => success(json!({ "silenceID": id, "expired": true })),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no active or pending silence {id}"),
        ),
        Err(e) => e.into_response(),
    }
}

/// `?matchers=<one per line>`
#[derive(Deserialize)]
pub(crate) struct PreviewQuery {
    matchers: String,
}

/// `GET /api/v1/silences/preview?matchers=…`: the active alerts a silence with these
/// matchers would silence now (the silence form shows them as they are typed), or why the
/// matchers do not parse.
pub(crate) async fn preview(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<PreviewQuery>,
) -> Response {
    let texts: Vec<String> = q
        .matchers
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if texts.is_empty() {
        return error(StatusCode::BAD_REQUEST, "bad_data", "no matchers");
    }
    let matchers = match probewatch_alerting::silence::parse_matchers(&texts) {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_data", e),
    };
    let probe = [probewatch_alerting::silence::Silence {
        id: 0,
        matchers,
        spare: None,
    }];
    let mut matched = Vec::new();
    if let Some(engine) = &state.alerting {
        let engine = engine.load();
        for rule in engine.groups().iter().flat_map(|g| g.rules.iter()) {
            for a in engine.alerts(&rule.key) {
                if probewatch_alerting::silence::silenced(&probe, &a.labels) {
                    matched.push(json!({
                        "alertname": rule.name,
                        "labels": a.labels,
                        "state": if a.state == probewatch_store::AlertState::Firing {
                            "firing"
                        } else {
                            "pending"
                        },
                    }));
                }
            }
        }
    }
    success(json!({ "alerts": matched }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewAcknowledgement {
    /// The alert's labels, `alertname` included (as `/api/v1/alerts` gives them).
    labels: std::collections::BTreeMap<String, String>,
    comment: String,
    /// Defaults to the logged-in user (`api` for the token).
    #[serde(default)]
    created_by: String,
}

/// `POST /api/v1/alerts/acknowledge`: acknowledges the active alert with exactly these
/// labels. Its notifications stop until it resolves (then the acknowledgement ends by
/// itself); the acknowledgement is kept, with who and why, among the silences.
pub(crate) async fn acknowledge(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = match authorize_write(&state, &method, &headers, "acknowledging alerts") {
        Ok(caller) => caller,
        Err(response) => return *response,
    };
    let request: NewAcknowledgement = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                format!("invalid acknowledgement: {e}"),
            );
        }
    };
    let active = state.alerting.as_ref().is_some_and(|engine| {
        let engine = engine.load();
        engine
            .groups()
            .iter()
            .flat_map(|g| g.rules.iter())
            .flat_map(|r| engine.alerts(&r.key))
            .any(|a| a.labels == request.labels)
    });
    if !active {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no active alert has exactly these labels (it may have resolved)",
        );
    }
    let created_by = if request.created_by.trim().is_empty() {
        caller
    } else {
        request.created_by
    };
    let row = match probewatch_alerting::silence::new_acknowledgement(
        &request.labels,
        created_by,
        request.comment,
        crate::now_ms(),
    ) {
        Ok(row) => row,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_data", e),
    };
    match crate::read(&state, move |store| store.add_silence(&row)).await {
        Ok(id) => success(json!({ "silenceID": id, "acknowledgement": true })),
        Err(e) => e.into_response(),
    }
}

/// `GET /api/v1/maintenance`: the configured maintenance windows, whether each is on now,
/// when it is on in words, and when each next starts (within 32 days).
pub(crate) async fn maintenance(State(state): State<AppState>) -> Response {
    let now = crate::now_ms();
    let windows = state
        .maintenance
        .as_ref()
        .map(|w| w.load())
        .unwrap_or_default();
    let data: Vec<Json> = windows
        .iter()
        .map(|w| {
            json!({
                "name": w.name,
                "matchers": w.matcher_texts,
                "comment": w.comment,
                "schedule": w.describe(),
                "active": w.active_at(now),
                "nextStart": w.next_start(now).map(crate::rfc3339),
            })
        })
        .collect();
    success(Json::Array(data))
}
