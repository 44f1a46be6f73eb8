//! The alerts page: active alerts grouped by a label and filtered by matchers (both in the
//! URL), with severity shown; what keeps them quiet (silences, acknowledgements,
//! maintenance, inhibition), hidden unless asked for; the silence form with its preview;
//! and the alert history, paged and filtered, with pending alerts that never fired folded.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use probewatch_store::SilenceRow;
use serde::Deserialize;

use crate::check_state::ago;
use crate::notifications_page::{FailingReceiver, NOTIFICATIONS_SHOWN, failing_receivers};
use crate::{ApiError, AppState};

/// An alert as the alerts page shows it.
struct AlertView {
    state: &'static str,
    state_class: &'static str,
    name: String,
    /// Its value of the label the page groups by.
    group: String,
    /// Its `severity` label, and how it looks (`critical`, `warning`, `info`, or empty).
    severity: String,
    severity_class: &'static str,
    /// For ordering: when it became active.
    active_at_ms: i64,
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

/// Alerts that share a value of the grouping label.
struct AlertGroupView {
    title: String,
    firing: usize,
    pending: usize,
    alerts: Vec<AlertView>,
}

/// An alert history row: one change, or several pending spells of one alert that never
/// fired, folded into one.
struct EventView {
    at: String,
    at_iso: String,
    name: String,
    event: String,
    labels: String,
    /// Pending spells folded into this row (1: a single change).
    times: usize,
    /// When the oldest folded spell began.
    first_iso: String,
}

/// History rows on one page.
const HISTORY_PAGE: usize = 50;
/// Alert changes read for the history (newest first).
const HISTORY_READ: usize = 5_000;

/// How a `severity` label looks: Alertmanager's and PagerDuty's usual words.
fn severity_class(value: &str) -> &'static str {
    match value.to_ascii_lowercase().as_str() {
        "critical" | "page" | "error" | "high" | "emergency" | "major" => "critical",
        "warning" | "warn" | "ticket" | "medium" | "minor" => "warning",
        "info" | "low" | "none" | "notice" => "info",
        _ => "",
    }
}

/// The `filter=` matchers (`{severity="page", probe=~"web.*"}`, braces optional) as one
/// silence-shaped test, or why they do not parse.
fn parse_filter(text: &str) -> Result<Vec<probewatch_alerting::silence::Silence>, String> {
    let inner = text.trim();
    if inner.is_empty() {
        return Ok(Vec::new());
    }
    let inner = inner
        .strip_prefix('{')
        .and_then(|i| i.strip_suffix('}'))
        .unwrap_or(inner);
    let alternatives = probewatch_promql::parse_selector(&format!("{{{inner}}}"))
        .map_err(|e| format!("filter {text:?}: {e}"))?;
    match alternatives.as_slice() {
        [one] => Ok(vec![probewatch_alerting::silence::Silence {
            id: 0,
            matchers: one.clone(),
            spare: None,
        }]),
        _ => Err(format!("filter {text:?}: `or` is not allowed here")),
    }
}

/// History rows for acknowledgements: one when given (by whom, why), one when it ended.
fn acknowledgement_events(rows: &[SilenceRow]) -> Vec<probewatch_store::AlertEvent> {
    let mut out = Vec::new();
    for r in rows.iter().filter(|r| r.acknowledgement) {
        let Ok(matchers) = probewatch_alerting::silence::parse_matchers(&r.matchers) else {
            continue;
        };
        let labels: std::collections::BTreeMap<String, String> = matchers
            .iter()
            .map(|m| (m.name.clone(), m.value.clone()))
            .collect();
        let name = labels.get("alertname").cloned().unwrap_or_default();
        let rest: std::collections::BTreeMap<String, String> = labels
            .into_iter()
            .filter(|(k, _)| k != "alertname")
            .collect();
        let text = probewatch_alerting::engine::canonical(&rest);
        let event = |event: String, at_ms: i64| probewatch_store::AlertEvent {
            rule_key: format!("\u{0}{name}"),
            labels: text.clone(),
            event,
            at_ms,
            value: 0.0,
        };
        out.push(event(
            format!("acknowledged by {}: {}", r.created_by, r.comment),
            r.created_at_ms,
        ));
        if let Some(ended) = r.expired_at_ms {
            out.push(event("acknowledgement ended".into(), ended));
        }
    }
    out
}

/// The history newest first, each alert's pending spells that never fired folded into one
/// row (an alert that flaps between pending and inactive is one line, not hundreds).
fn fold_history(events: Vec<probewatch_store::AlertEvent>, now: i64) -> Vec<EventView> {
    use std::collections::{HashMap, HashSet};
    let mut out: Vec<EventView> = Vec::new();
    // Per alert: the row its older pending spells fold into.
    let mut open: HashMap<(String, String), usize> = HashMap::new();
    // Alerts whose next older pending spell is the one that fired.
    let mut fired_next: HashSet<(String, String)> = HashSet::new();
    for e in events {
        let key = (e.rule_key.clone(), e.labels.clone());
        let view = |e: &probewatch_store::AlertEvent| EventView {
            at: ago(e.at_ms, now),
            at_iso: crate::rfc3339(e.at_ms),
            name: e.rule_key.split('\u{0}').nth(1).unwrap_or("").to_string(),
            event: e.event.clone(),
            labels: e.labels.clone(),
            times: 1,
            first_iso: crate::rfc3339(e.at_ms),
        };
        if e.event == "pending" {
            if fired_next.remove(&key) {
                out.push(view(&e));
            } else if let Some(&i) = open.get(&key) {
                out[i].times += 1;
                out[i].first_iso = crate::rfc3339(e.at_ms);
            } else {
                out.push(view(&e));
                open.insert(key, out.len() - 1);
            }
        } else {
            open.remove(&key);
            if e.event == "firing" {
                fired_next.insert(key);
            }
            out.push(view(&e));
        }
    }
    out
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
    groups: Vec<AlertGroupView>,
    /// The label alerts are grouped by, and the filter, as given.
    group_by: String,
    filter: String,
    /// Why the filter was not used, if it was not.
    filter_error: String,
    silences: Vec<SilenceView>,
    events: Vec<EventView>,
    /// The history's page, pages, and links to the pages around it.
    history_page: usize,
    history_pages: usize,
    history_prev: Option<String>,
    history_next: Option<String>,
}

/// `GET /alerts`: firing and pending alerts, silences (with a form to create and buttons to
/// expire, for a logged-in user or with the API token), and the alert history.
/// `?silenced=1&silence=<matchers>`
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AlertsQuery {
    silenced: Option<String>,
    silence: Option<String>,
    /// Matchers every shown alert (and history row) matches.
    filter: Option<String>,
    /// The label to group alerts by (default `alertname`).
    group: Option<String>,
    /// The history's page (1-based).
    history: Option<usize>,
}

impl AlertsQuery {
    /// A link to this page with `change` applied.
    fn href(&self, change: &[(&str, &str)]) -> String {
        crate::history::href_with(
            "/alerts",
            &[
                ("filter", self.filter.clone()),
                ("group", self.group.clone()),
                ("silenced", self.silenced.clone()),
                ("history", self.history.map(|h| h.to_string())),
            ],
            change,
        )
    }
}

pub(crate) async fn alerts(
    State(state): State<AppState>,
    Query(q): Query<AlertsQuery>,
) -> Result<Response, crate::PageError> {
    let now = crate::now_ms();
    let (silence_rows, events, notifications) = crate::read(&state, |store| {
        Ok((
            store.silences()?,
            store.alert_events(HISTORY_READ)?,
            store.notifications(NOTIFICATIONS_SHOWN)?,
        ))
    })
    .await?;
    let (filter, filter_error) = match parse_filter(q.filter.as_deref().unwrap_or("")) {
        Ok(f) => (f, String::new()),
        Err(e) => (Vec::new(), e),
    };
    let kept = |labels: &std::collections::BTreeMap<String, String>| {
        filter.is_empty() || probewatch_alerting::silence::silenced(&filter, labels)
    };
    let group_by = q
        .group
        .as_deref()
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .unwrap_or("alertname")
        .to_string();
    let active = probewatch_alerting::silence::active_silences(&silence_rows, now);
    let windows: Vec<probewatch_alerting::maintenance::Window> = state
        .maintenance
        .as_ref()
        .map(|w| w.active(now))
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
                if !kept(&a.labels) {
                    continue;
                }
                if !silenced_by.is_empty() && !show_silenced {
                    hidden_silenced += 1;
                    continue;
                }
                let severity = a.labels.get("severity").cloned().unwrap_or_default();
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
                    group: a
                        .labels
                        .get(&group_by)
                        .cloned()
                        .unwrap_or_else(|| "(none)".into()),
                    severity_class: severity_class(&severity),
                    severity,
                    active_at_ms: a.active_at_ms,
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
    // Groups by the chosen label; in each, firing first, then the newest.
    alerts.sort_by(|a, b| {
        a.group
            .cmp(&b.group)
            .then_with(|| a.state.cmp(b.state))
            .then_with(|| b.active_at_ms.cmp(&a.active_at_ms))
    });
    let mut groups: Vec<AlertGroupView> = Vec::new();
    for alert in alerts {
        if groups.last().is_none_or(|g| g.title != alert.group) {
            groups.push(AlertGroupView {
                title: alert.group.clone(),
                firing: 0,
                pending: 0,
                alerts: Vec::new(),
            });
        }
        if let Some(g) = groups.last_mut() {
            if alert.state == "firing" {
                g.firing += 1;
            } else {
                g.pending += 1;
            }
            g.alerts.push(alert);
        }
    }
    // Acknowledgements belong to their alert's history: when and by whom, and when they
    // ended.
    let mut events = events;
    events.extend(acknowledgement_events(&silence_rows));
    events.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
    let events: Vec<probewatch_store::AlertEvent> = events
        .into_iter()
        .filter(|e| {
            let mut labels: std::collections::BTreeMap<String, String> =
                probewatch_core::labels::parse_canonical(&e.labels)
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
            labels
                .entry("alertname".into())
                .or_insert_with(|| e.rule_key.split('\u{0}').nth(1).unwrap_or("").to_string());
            kept(&labels)
        })
        .collect();
    let folded = fold_history(events, now);
    let history_pages = folded.len().div_ceil(HISTORY_PAGE).max(1);
    let history_page = q.history.unwrap_or(1).clamp(1, history_pages);
    let events: Vec<EventView> = folded
        .into_iter()
        .skip((history_page - 1) * HISTORY_PAGE)
        .take(HISTORY_PAGE)
        .collect();
    let history_prev =
        (history_page > 1).then(|| q.href(&[("history", &(history_page - 1).to_string())]));
    let history_next = (history_page < history_pages)
        .then(|| q.href(&[("history", &(history_page + 1).to_string())]));
    let html = AlertsPage {
        page: "alerts",
        hidden_silenced,
        show_silenced_href: q.href(&[("silenced", "1")]),
        show_silenced,
        prefill: q.silence.unwrap_or_default(),
        needs_token: state.access.is_none(),
        failing: failing_receivers(&notifications, now),
        groups,
        group_by,
        filter: q.filter.clone().unwrap_or_default(),
        filter_error,
        silences,
        events,
        history_page,
        history_pages,
        history_prev,
        history_next,
    }
    .render()
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Html(html).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(rule: &str, labels: &str, event: &str, at_ms: i64) -> probewatch_store::AlertEvent {
        probewatch_store::AlertEvent {
            rule_key: format!("file\u{0}{rule}"),
            labels: labels.into(),
            event: event.into(),
            at_ms,
            value: 1.0,
        }
    }

    #[test]
    fn pending_spells_that_never_fired_fold_and_the_one_that_fired_stays() {
        let web = r#"{probe="web"}"#;
        let db = r#"{probe="db"}"#;
        // Newest first: web fired after three spells that came to nothing; db interleaves.
        let rows = fold_history(
            vec![
                event("Down", web, "resolved", 900),
                event("Down", web, "firing", 800),
                event("Down", web, "pending", 700),
                event("Down", db, "pending", 650),
                event("Down", web, "pending", 600),
                event("Down", web, "pending", 500),
                event("Down", db, "pending", 450),
                event("Down", web, "pending", 400),
            ],
            1_000,
        );
        let got: Vec<(String, &str, usize)> = rows
            .iter()
            .map(|r| (r.labels.clone(), r.event.as_str(), r.times))
            .collect();
        assert_eq!(
            got,
            [
                (web.to_string(), "resolved", 1),
                (web.to_string(), "firing", 1),
                (web.to_string(), "pending", 1),
                (db.to_string(), "pending", 2),
                (web.to_string(), "pending", 3),
            ]
        );
        assert_eq!(rows[4].first_iso, crate::rfc3339(400));
    }

    #[test]
    fn filters_parse_with_or_without_braces_and_severities_look_their_part() {
        assert_eq!(parse_filter("").map(|f| f.len()), Ok(0));
        assert_eq!(parse_filter(r#"severity="page""#).map(|f| f.len()), Ok(1));
        let f = parse_filter(r#"{severity="page", probe=~"web|api"}"#).expect("filter");
        assert_eq!(f[0].matchers.len(), 2);
        assert!(parse_filter("severity==page").is_err());
        assert_eq!(severity_class("Critical"), "critical");
        assert_eq!(severity_class("ticket"), "warning");
        assert_eq!(severity_class("whatever"), "");
    }
}
