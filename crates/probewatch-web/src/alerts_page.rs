//! The alerts page: active alerts grouped by a label and filtered by matchers (both in the
//! URL), with severity shown; what keeps them quiet (silences, acknowledgements,
//! maintenance, inhibition), hidden unless asked for; the silence form with its preview;
//! and the alert history, paged and filtered, with pending alerts that never fired folded.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use probewatch_store::SilenceRow;
use serde::Deserialize;

use crate::pages::{FailingReceiver, NOTIFICATIONS_SHOWN, ago, failing_receivers};
use crate::{ApiError, AppState};

/// An alert as the alerts page shows it.
struct AlertView {
    state: &'static str,
    state_class: &'static str,
    name: String,
    /// `#3, #5`: the active silences that match it (empty: not silenced).
    silenced_by: String,
    /// `ops: on it`: who acknowledged it and why (empty: not acknowledged).
    acked_by: String,
    /// Its labels as JSON, for the Acknowledge form.
    labels_json: String,
    /// Its labels as silence matchers, one per line (`alertname="X"` first), for the
    /// Silence button.
    matchers: String,
    labels: Vec<(String, String)>,
    annotations: Vec<(String, String)>,
    since: String,
    since_iso: String,
    value: String,
}

/// A silence row.
struct SilenceView {
    id: i64,
    /// `silence` or `acknowledgement`.
    kind: &'static str,
    status: String,
    matchers: Vec<String>,
    ends: String,
    by: String,
    comment: String,
}

/// An alert history row.
struct EventView {
    at: String,
    at_iso: String,
    name: String,
    event: String,
    labels: String,
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    page: &'static str,
    /// Silenced alerts left out (shown with `?silenced=1`), and the link that shows them.
    hidden_silenced: usize,
    show_silenced_href: String,
    show_silenced: bool,
    /// Matchers to start the silence form with (`?silence=`, from a check page).
    prefill: String,
    /// Whether a change needs the API token typed in (no `[access]` login).
    needs_token: bool,
    failing: Vec<FailingReceiver>,
    alerts: Vec<AlertView>,
    silences: Vec<SilenceView>,
    events: Vec<EventView>,
}

/// `GET /alerts`: firing and pending alerts, silences (with a form to create and buttons to
/// expire, for a logged-in user or with the API token), and the alert history.
/// `?silenced=1&silence=<matchers>`
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AlertsQuery {
    silenced: Option<String>,
    silence: Option<String>,
}

pub(crate) async fn alerts(
    State(state): State<AppState>,
    Query(q): Query<AlertsQuery>,
) -> Result<Response, ApiError> {
    let now = crate::now_ms();
    let (silence_rows, events, notifications) = crate::read(&state, |store| {
        Ok((
            store.silences()?,
            store.alert_events(100)?,
            store.notifications(NOTIFICATIONS_SHOWN)?,
        ))
    })
    .await?;
    let active = probewatch_alerting::silence::active_silences(&silence_rows, now);
    let windows: Vec<probewatch_alerting::maintenance::Window> = state
        .maintenance
        .as_ref()
        .map(|w| {
            w.load()
                .iter()
                .filter(|w| w.active_at(now))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let show_silenced = q
        .silenced
        .as_deref()
        .is_some_and(|v| !v.is_empty() && v != "0");
    let mut hidden_silenced = 0;
    let mut alerts = Vec::new();
    if let Some(engine) = &state.alerting {
        let engine = engine.load();
        let inhibit_rules = state
            .inhibitions
            .as_ref()
            .map(|i| i.load())
            .unwrap_or_default();
        let firing: Vec<&std::collections::BTreeMap<String, String>> = engine
            .groups()
            .iter()
            .flat_map(|g| g.rules.iter())
            .flat_map(|r| engine.alerts(&r.key))
            .filter(|a| a.state == probewatch_store::AlertState::Firing)
            .map(|a| &a.labels)
            .collect();
        let inhibitions = probewatch_alerting::inhibit::silences(&inhibit_rules, &firing);
        for rule in engine.groups().iter().flat_map(|g| g.rules.iter()) {
            for a in engine.alerts(&rule.key) {
                let firing = a.state == probewatch_store::AlertState::Firing;
                let matching: Vec<&SilenceRow> = active
                    .iter()
                    .filter(|s| {
                        probewatch_alerting::silence::silenced(std::slice::from_ref(s), &a.labels)
                    })
                    .filter_map(|s| silence_rows.iter().find(|r| r.id == s.id))
                    .collect();
                let mut silenced_by: Vec<String> = matching
                    .iter()
                    .filter(|r| !r.acknowledgement)
                    .map(|r| format!("#{}", r.id))
                    .collect();
                silenced_by.extend(
                    windows
                        .iter()
                        .filter(|w| w.covers(&a.labels))
                        .map(|w| format!("maintenance {:?}", w.name)),
                );
                if probewatch_alerting::silence::silenced(&inhibitions, &a.labels) {
                    silenced_by.push("an inhibiting alert".into());
                }
                // Acknowledged alerts stay in view (marked): someone is on them.
                let acked_by: Vec<String> = matching
                    .iter()
                    .filter(|r| r.acknowledgement)
                    .map(|r| format!("{}: {}", r.created_by, r.comment))
                    .collect();
                if !silenced_by.is_empty() && !show_silenced {
                    hidden_silenced += 1;
                    continue;
                }
                let mut matchers = vec![probewatch_alerting::silence::matcher_text(
                    "alertname",
                    &rule.name,
                )];
                matchers.extend(
                    a.labels
                        .iter()
                        .filter(|(k, _)| *k != "alertname")
                        .map(|(k, v)| probewatch_alerting::silence::matcher_text(k, v)),
                );
                alerts.push(AlertView {
                    state: if firing { "firing" } else { "pending" },
                    state_class: if firing { "critical" } else { "warning" },
                    name: rule.name.clone(),
                    silenced_by: silenced_by.join(", "),
                    acked_by: acked_by.join("; "),
                    labels_json: serde_json::to_string(&a.labels).unwrap_or_default(),
                    matchers: matchers.join("\n"),
                    labels: a
                        .labels
                        .iter()
                        .filter(|(k, _)| *k != "alertname")
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    annotations: a
                        .annotations
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    since: ago(a.active_at_ms, now),
                    since_iso: crate::rfc3339(a.active_at_ms),
                    value: probewatch_promql::format_value(a.value),
                });
            }
        }
    }
    let silences = silence_rows
        .iter()
        .map(|s| {
            let json = crate::silences_api::silence_json(s, now);
            SilenceView {
                id: s.id,
                kind: if s.acknowledgement {
                    "acknowledgement"
                } else {
                    "silence"
                },
                status: json["status"].as_str().unwrap_or("").to_string(),
                matchers: s.matchers.clone(),
                ends: json["endsAt"].as_str().unwrap_or("").to_string(),
                by: s.created_by.clone(),
                comment: s.comment.clone(),
            }
        })
        .collect();
    let events = events
        .into_iter()
        .map(|e| EventView {
            at: ago(e.at_ms, now),
            at_iso: crate::rfc3339(e.at_ms),
            name: e.rule_key.split('\u{0}').nth(1).unwrap_or("").to_string(),
            event: e.event,
            labels: e.labels,
        })
        .collect();
    let html = AlertsPage {
        page: "alerts",
        hidden_silenced,
        show_silenced_href: "/alerts?silenced=1".into(),
        show_silenced,
        prefill: q.silence.unwrap_or_default(),
        needs_token: state.access.is_none(),
        failing: failing_receivers(&notifications, now),
        alerts,
        silences,
        events,
    }
    .render()
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Html(html).into_response())
}
