//! The notifications page (`/notifications`): every receiver with its attempts and last
//! error, a test button, the newest notifications; and the failing-receiver banner that the
//! overview and /alerts show.

use askama::Template;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};

use crate::check_state::ago;
use crate::{ApiError, AppState};

/// A receiver whose notifications are not going out: some wait after a failed attempt.
pub(crate) struct FailingReceiver {
    pub(crate) receiver: String,
    pub(crate) waiting: usize,
    pub(crate) last_error: String,
    pub(crate) since: String,
}

/// Notifications looked at for the failing-receiver banner and the notifications page.
pub(crate) const NOTIFICATIONS_SHOWN: usize = 500;

/// Receivers with notifications still waiting after a failed attempt, from the newest
/// notifications (`rows`, newest first): what the banner on the overview and /alerts says.
pub(crate) fn failing_receivers(
    rows: &[probewatch_store::NotificationRow],
    now: i64,
) -> Vec<FailingReceiver> {
    let mut out: Vec<FailingReceiver> = Vec::new();
    for n in rows {
        let waiting = n.delivered_at_ms.is_none() && n.failed_at_ms.is_none();
        let Some(error) = n.last_error.as_ref().filter(|_| waiting && n.attempts > 0) else {
            continue;
        };
        match out.iter_mut().find(|f| f.receiver == n.receiver) {
            Some(f) => {
                f.waiting += 1;
                f.since = ago(n.created_at_ms, now);
            }
            None => out.push(FailingReceiver {
                receiver: n.receiver.clone(),
                waiting: 1,
                last_error: error.clone(),
                since: ago(n.created_at_ms, now),
            }),
        }
    }
    out
}

/// One receiver on the notifications page.
struct ReceiverSummary {
    receiver: String,
    /// `webhook`, `email`, …; empty for a receiver no longer configured.
    kind: String,
    /// Attempts and failed attempts since the start.
    attempts: u64,
    failed_attempts: u64,
    delivered: usize,
    waiting: usize,
    failed: usize,
    last_delivered: String,
    last_error: String,
}

/// One notification on the notifications page.
struct NotificationView {
    id: i64,
    receiver: String,
    group: String,
    queued: String,
    attempts: u32,
    state: &'static str,
    state_class: &'static str,
    last_error: String,
}

#[derive(Template)]
#[template(path = "notifications.html")]
struct NotificationsPage {
    page: &'static str,
    /// Whether a change needs the API token typed in (no `[access]` login).
    needs_token: bool,
    failing: Vec<FailingReceiver>,
    receivers: Vec<ReceiverSummary>,
    notifications: Vec<NotificationView>,
}

/// `GET /notifications`: per receiver what was delivered, what waits and why, and the
/// newest notifications with their attempts and last error.
pub(crate) async fn notifications(
    State(state): State<AppState>,
) -> Result<Response, crate::PageError> {
    let now = crate::now_ms();
    let rows = crate::read(&state, |store| store.notifications(NOTIFICATIONS_SHOWN)).await?;
    let summary = |receiver: &str| ReceiverSummary {
        receiver: receiver.to_string(),
        kind: String::new(),
        attempts: 0,
        failed_attempts: 0,
        delivered: 0,
        waiting: 0,
        failed: 0,
        last_delivered: "—".into(),
        last_error: String::new(),
    };
    // Every configured receiver, whether or not anything was sent to it yet.
    let mut receivers: Vec<ReceiverSummary> = Vec::new();
    for info in state
        .receivers
        .as_ref()
        .map(|r| r.list())
        .unwrap_or_default()
    {
        receivers.push(ReceiverSummary {
            kind: info.kind,
            attempts: info.attempts,
            failed_attempts: info.failed,
            ..summary(&info.name)
        });
    }
    for n in &rows {
        let at = match receivers.iter().position(|r| r.receiver == n.receiver) {
            Some(at) => at,
            None => {
                receivers.push(summary(&n.receiver));
                receivers.len() - 1
            }
        };
        let r = &mut receivers[at];
        match (n.delivered_at_ms, n.failed_at_ms) {
            (Some(at), _) => {
                if r.delivered == 0 {
                    r.last_delivered = ago(at, now);
                }
                r.delivered += 1;
            }
            (None, Some(_)) => r.failed += 1,
            (None, None) => r.waiting += 1,
        }
        if r.last_error.is_empty()
            && let Some(e) = &n.last_error
        {
            r.last_error = e.clone();
        }
    }
    receivers.sort_by(|a, b| a.receiver.cmp(&b.receiver));
    let notifications = rows
        .iter()
        .take(200)
        .map(|n| {
            let (state, state_class) = match (n.delivered_at_ms, n.failed_at_ms) {
                (Some(_), _) => ("delivered", "ok"),
                (None, Some(_)) => ("failed", "critical"),
                (None, None) if n.attempts > 0 => ("retrying", "warning"),
                (None, None) => ("queued", "unknown"),
            };
            NotificationView {
                id: n.id,
                receiver: n.receiver.clone(),
                group: n.group_key.clone(),
                queued: ago(n.created_at_ms, now),
                attempts: n.attempts,
                state,
                state_class,
                last_error: n.last_error.clone().unwrap_or_default(),
            }
        })
        .collect();
    let html = NotificationsPage {
        page: "notifications",
        needs_token: state.access.is_none(),
        failing: failing_receivers(&rows, now),
        receivers,
        notifications,
    }
    .render()
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Html(html).into_response())
}
