//! How a check's state is shown on every page: ok, warning, critical, unknown, or stale
//! (silent past its interval), offline (its agent is) or maintenance; and the "ago" and
//! "for" texts beside it.

use probewatch_store::CheckRow;

use crate::AppState;

/// "12 s ago", "3 min ago", "5 h ago", "2 d ago" (or "in 4 s" for a clock ahead of ours).
pub(crate) fn ago(ms: i64, now: i64) -> String {
    let d = (now - ms) / 1000;
    let (n, unit) = match d.abs() {
        s if s < 60 => (s, "s"),
        s if s < 3600 => (s / 60, "min"),
        s if s < 86_400 => (s / 3600, "h"),
        s => (s / 86_400, "d"),
    };
    if d < 0 {
        format!("in {n} {unit}")
    } else {
        format!("{n} {unit} ago")
    }
}

/// "45 s", "12 min", "5 h", "3 d": how long since `ms`.
pub(crate) fn duration_text(ms: i64, now: i64) -> String {
    let d = ((now - ms) / 1000).max(0);
    match d {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The check's state (CSS class, word): its status, or `stale` when nothing came for three
/// of its intervals (the declared one, else the one learnt from its results).
pub(crate) fn state(c: &CheckRow, now: i64) -> (&'static str, &'static str) {
    if c.is_silent(now) {
        return ("stale", "stale");
    }
    let name = crate::status_word(c.status);
    (name, name)
}

/// What decides how a check is shown beyond its own row: hosts whose agent is offline, and
/// the maintenance windows on now.
#[derive(Debug, Default)]
pub(crate) struct StateContext {
    offline_hosts: std::collections::HashSet<String>,
    maintenance: Vec<probewatch_alerting::maintenance::Window>,
}

impl StateContext {
    /// The context at `now`.
    pub(crate) fn of(state: &AppState, now: i64) -> StateContext {
        StateContext {
            offline_hosts: state
                .remote
                .as_ref()
                .map(|r| r.offline_hosts())
                .unwrap_or_default(),
            maintenance: state
                .maintenance
                .as_ref()
                .map(|w| w.active(now))
                .unwrap_or_default(),
        }
    }

    /// The maintenance window on now that covers the check, if any.
    pub(crate) fn maintenance_of(
        &self,
        c: &CheckRow,
    ) -> Option<&probewatch_alerting::maintenance::Window> {
        self.maintenance
            .iter()
            .find(|w| w.covers_check(&c.probe, &c.host, &c.check))
    }
}

/// [`state`], except that a check under maintenance is `maintenance` whatever its status
/// (it is expected to be down), and a silent check whose host's agent is offline is
/// `offline` ("agent offline"): the agent is away, not the probe.
pub(crate) fn shown_state(
    c: &CheckRow,
    now: i64,
    context: &StateContext,
) -> (&'static str, &'static str) {
    if context.maintenance_of(c).is_some() {
        return ("maintenance", "maintenance");
    }
    match state(c, now) {
        ("stale", _) if context.offline_hosts.contains(&c.host) => ("offline", "agent offline"),
        other => other,
    }
}

/// When a check entered the state it is shown in: a silent (stale or offline) check at its
/// last result; otherwise at the first result of its current status (its last result when
/// that is not known yet).
pub(crate) fn since_ms(c: &CheckRow, shown: &str) -> i64 {
    match shown {
        "stale" | "offline" => c.time_ms,
        _ => c.status_since_ms.unwrap_or(c.time_ms).min(c.time_ms),
    }
}

/// Whether a shown state is something to look at: not ok, and not planned maintenance.
pub(crate) fn is_problem(state: &str) -> bool {
    !matches!(state, "ok" | "maintenance")
}
