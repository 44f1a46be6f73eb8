//! `/api/v1/rules` and `/api/v1/alerts` in Prometheus's shapes, and `/api/v1/notifications`
//! (the outbox with each notification's delivery state).

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use probewatch_alerting::RuleKind;
use probewatch_alerting::engine::ActiveAlert;
use probewatch_store::AlertState;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::{ApiError, AppState};

fn state_name(state: AlertState) -> &'static str {
    match state {
        AlertState::Pending => "pending",
        AlertState::Firing => "firing",
    }
}

fn alert_json(a: &ActiveAlert) -> Json {
    json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "state": state_name(a.state),
        "activeAt": crate::rfc3339(a.active_at_ms),
        "value": probewatch_promql::format_value(a.value),
    })
}

fn success(data: Json) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

/// `GET /api/v1/rules`
pub(crate) async fn rules(State(state): State<AppState>) -> Response {
    let Some(engine) = &state.alerting else {
        return success(json!({"groups": []}));
    };
    let engine = engine.load();
    let groups: Vec<Json> = engine
        .groups()
        .iter()
        .map(|g| {
            let mut last = None;
            let mut total = 0.0;
            let rules: Vec<Json> = g
                .rules
                .iter()
                .map(|r| {
                    let health = engine.health(&r.key);
                    total += health.duration_seconds;
                    last = last.max(health.last_evaluation_ms);
                    let labels: BTreeMap<&str, &str> =
                        r.labels.iter().map(|(k, t)| (k.as_str(), t.source())).collect();
                    let common = json!({
                        "name": r.name,
                        "query": r.expr,
                        "labels": labels,
                        "health": match (&health.last_error, health.last_evaluation_ms) {
                            (Some(_), _) => "err",
                            (None, Some(_)) => "ok",
                            (None, None) => "unknown",
                        },
                        "lastError": health.last_error.clone().unwrap_or_default(),
                        "evaluationTime": health.duration_seconds,
                        "lastEvaluation": health.last_evaluation_ms.map(crate::rfc3339).unwrap_or_default(),
                    });
                    let mut rule = common.as_object().cloned().unwrap_or_default();
                    match &r.kind {
                        RuleKind::Alert {
                            for_ms,
                            keep_firing_for_ms,
                            annotations,
                        } => {
                            let alerts = engine.alerts(&r.key);
                            let rule_state = if alerts.iter().any(|a| a.state == AlertState::Firing) {
                                "firing"
                            } else if alerts.is_empty() {
                                "inactive"
                            } else {
                                "pending"
                            };
                            let annotations: BTreeMap<&str, &str> =
                                annotations.iter().map(|(k, t)| (k.as_str(), t.source())).collect();
                            rule.insert("type".into(), json!("alerting"));
                            rule.insert("state".into(), json!(rule_state));
                            rule.insert("duration".into(), json!(*for_ms as f64 / 1000.0));
                            rule.insert("keepFiringFor".into(), json!(*keep_firing_for_ms as f64 / 1000.0));
                            rule.insert("annotations".into(), json!(annotations));
                            rule.insert(
                                "alerts".into(),
                                Json::Array(alerts.iter().map(|a| alert_json(a)).collect()),
                            );
                        }
                        RuleKind::Record => {
                            rule.insert("type".into(), json!("recording"));
                        }
                    }
                    Json::Object(rule)
                })
                .collect();
            json!({
                "name": g.name,
                "file": g.file.display().to_string(),
                "interval": g.interval_ms as f64 / 1000.0,
                "rules": rules,
                "evaluationTime": total,
                "lastEvaluation": last.map(crate::rfc3339).unwrap_or_default(),
            })
        })
        .collect();
    success(json!({ "groups": groups }))
}

/// `GET /api/v1/alerts`: every pending and firing alert.
pub(crate) async fn alerts(State(state): State<AppState>) -> Response {
    let Some(engine) = &state.alerting else {
        return success(json!({"alerts": []}));
    };
    let engine = engine.load();
    let alerts: Vec<Json> = engine
        .groups()
        .iter()
        .flat_map(|g| g.rules.iter())
        .flat_map(|r| engine.alerts(&r.key))
        .map(alert_json)
        .collect();
    success(json!({ "alerts": alerts }))
}

#[derive(Deserialize)]
pub(crate) struct NotificationsQuery {
    limit: Option<usize>,
}

/// `GET /api/v1/notifications?limit=N`: the newest notifications and how delivery went.
pub(crate) async fn notifications(
    State(state): State<AppState>,
    Query(q): Query<NotificationsQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100).min(10_000);
    let rows = crate::read(&state, move |store| {
        let rows = store.notifications(limit)?;
        let mut out = Vec::with_capacity(rows.len());
        for n in rows {
            let attempts = store.attempts(n.id)?;
            out.push((n, attempts));
        }
        Ok(out)
    })
    .await?;
    let items: Vec<Json> = rows
        .iter()
        .map(|(n, attempts)| {
            json!({
                "group": n.group_key,
                "attemptLog": attempts.iter().map(|a| json!({
                    "at": crate::rfc3339(a.at_ms),
                    "ok": a.ok,
                    "detail": a.detail,
                })).collect::<Vec<_>>(),
                "id": n.id,
                "receiver": n.receiver,
                "createdAt": crate::rfc3339(n.created_at_ms),
                "attempts": n.attempts,
                "delivered": n.delivered_at_ms.is_some(),
                "deliveredAt": n.delivered_at_ms.map(crate::rfc3339),
                // Refused for good by its receiver: no more attempts.
                "failed": n.failed_at_ms.is_some(),
                "failedAt": n.failed_at_ms.map(crate::rfc3339),
                "state": match (n.delivered_at_ms, n.failed_at_ms) {
                    (Some(_), _) => "delivered",
                    (None, Some(_)) => "failed",
                    (None, None) => "queued",
                },
                "lastError": n.last_error,
                "payload": serde_json::from_str::<Json>(&n.payload).unwrap_or(Json::Null),
            })
        })
        .collect();
    Ok(success(json!(items)))
}
