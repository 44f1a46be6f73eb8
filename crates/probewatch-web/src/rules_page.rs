//! The rules page (`/rules`): every group and rule, its state, last evaluation and error,
//! and why the last configuration reload failed if it did.

use askama::Template;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};

use crate::check_state::ago;
use crate::{ApiError, AppState};

/// A rule row.
struct RuleView {
    kind: &'static str,
    name: String,
    state: &'static str,
    state_class: &'static str,
    expr: String,
    last: String,
    took: String,
    error: String,
}

/// A group of rules.
struct RuleGroupView {
    name: String,
    interval: String,
    file: String,
    rules: Vec<RuleView>,
}

#[derive(Template)]
#[template(path = "rules.html")]
struct RulesPage {
    page: &'static str,
    groups: Vec<RuleGroupView>,
    /// Why the last configuration reload failed (the rules shown are the older ones).
    reload_error: Option<String>,
}

/// `GET /rules`: groups, rules, state, last evaluation, its duration and error.
pub(crate) async fn rules(State(state): State<AppState>) -> Result<Response, crate::PageError> {
    let now = crate::now_ms();
    let mut groups = Vec::new();
    if let Some(engine) = &state.alerting {
        let engine = engine.load();
        for g in engine.groups() {
            let rules = g
                .rules
                .iter()
                .map(|r| {
                    let health = engine.health(&r.key);
                    let alerts = engine.alerts(&r.key);
                    let (state, state_class) = match (&r.kind, &health.last_error) {
                        (_, Some(_)) => ("error", "critical"),
                        (probewatch_alerting::RuleKind::Record, None) => ("recording", "ok"),
                        _ if alerts
                            .iter()
                            .any(|a| a.state == probewatch_store::AlertState::Firing) =>
                        {
                            ("firing", "critical")
                        }
                        _ if !alerts.is_empty() => ("pending", "warning"),
                        _ => ("inactive", "ok"),
                    };
                    RuleView {
                        kind: match r.kind {
                            probewatch_alerting::RuleKind::Record => "record",
                            probewatch_alerting::RuleKind::Alert { .. } => "alert",
                        },
                        name: r.name.clone(),
                        state,
                        state_class,
                        expr: r.expr.clone(),
                        last: health
                            .last_evaluation_ms
                            .map_or_else(|| "not yet".to_string(), |t| ago(t, now)),
                        took: format!("{:.1} ms", health.duration_seconds * 1e3),
                        error: health.last_error.unwrap_or_default(),
                    }
                })
                .collect();
            groups.push(RuleGroupView {
                name: g.name.clone(),
                interval: format!("{} s", g.interval_ms as f64 / 1000.0),
                file: g.file.display().to_string(),
                rules,
            });
        }
    }
    let reload_error = state.reload.as_ref().and_then(|r| {
        let status = r.status();
        status.last_error.map(|e| {
            format!(
                "The last configuration reload failed, so these are the rules loaded {}: {e}",
                ago(status.last_success_ms, now)
            )
        })
    });
    let html = RulesPage {
        page: "rules",
        groups,
        reload_error,
    }
    .render()
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Html(html).into_response())
}
