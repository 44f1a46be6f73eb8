//! The configured receivers over HTTP: `GET /api/v1/receivers` (each with its delivery
//! counts) and `POST /api/v1/receivers/<name>/test`, which sends that receiver a test
//! notification now and answers with what the receiver said — the question an operator
//! asks after adding or changing a receiver, answered before a real alert needs it.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::AppState;
use crate::access::authorize_write;

/// The daemon's receivers, as the API and the notifications page see them.
pub trait Receivers: Send + Sync {
    /// The configured receivers, in configuration order.
    fn list(&self) -> Vec<ReceiverInfo>;

    /// Sends receiver `name` a test notification now (blocking, bounded by the receiver's
    /// timeout). None: no receiver of that name; `Err`: why the receiver did not take it.
    fn send_test(&self, name: &str, requested_by: &str) -> Option<Result<String, String>>;
}

/// One configured receiver and how its deliveries went since the start.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiverInfo {
    /// Its name, as routes use it.
    pub name: String,
    /// `webhook`, `alertmanager`, `email` or `command`.
    pub kind: String,
    /// Delivery attempts since the start (tests included).
    pub attempts: u64,
    /// Attempts that failed.
    pub failed: u64,
}

fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = json!({"status": "error", "errorType": kind, "error": message.into()});
    (status, axum::Json(body)).into_response()
}

/// `GET /api/v1/receivers`
pub(crate) async fn list(State(state): State<AppState>) -> Response {
    let receivers = state
        .receivers
        .as_ref()
        .map(|r| r.list())
        .unwrap_or_default();
    axum::Json(json!({"status": "success", "data": receivers})).into_response()
}

/// `POST /api/v1/receivers/<name>/test`: 200 once the test ran, with `delivered` and what
/// the receiver answered or why it did not take it (the test worked either way: its outcome
/// is data, as in Grafana's contact point test); 404 for an unknown receiver.
pub(crate) async fn test(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let caller = match authorize_write(&state, &method, &headers, "testing receivers") {
        Ok(caller) => caller,
        Err(response) => return *response,
    };
    let Some(receivers) = state.receivers.clone() else {
        return error(StatusCode::NOT_FOUND, "not_found", "no receivers here");
    };
    let receiver = name.clone();
    let sent = tokio::task::spawn_blocking(move || receivers.send_test(&receiver, &caller)).await;
    match sent {
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no receiver named {name:?}"),
        ),
        Ok(Some(Ok(answer))) => axum::Json(json!({
            "status": "success",
            "data": {"receiver": name, "delivered": true, "detail": answer},
        }))
        .into_response(),
        Ok(Some(Err(why))) => axum::Json(json!({
            "status": "success",
            "data": {"receiver": name, "delivered": false, "detail": why},
        }))
        .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the test did not finish: {e}"),
        ),
    }
}
