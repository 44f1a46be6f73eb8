//! The ingest page (`/ingest`: spools, rate, latency, rejected and unreadable files) and the
//! agents page (`/agents`).

use askama::Template;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};

use crate::check_state::ago;
use crate::{ApiError, AppState};

/// A rejected file row.
struct RejectedView {
    at: String,
    at_iso: String,
    spool: String,
    path: String,
    kind: String,
    error: String,
}

#[derive(Template)]
#[template(path = "ingest.html")]
struct IngestPage {
    page: &'static str,
    spools: Vec<(String, u64, u64)>,
    rejected: Vec<RejectedView>,
    rate_1m: String,
    rate_1h: String,
    minutes_json: String,
    from_ms: i64,
    to_ms: i64,
    latency: Vec<(&'static str, String)>,
    latency_files: usize,
    /// What readiness reports now (spools not watched, commits failing, ingest stopped).
    problems: Vec<String>,
    /// Files that cannot be read, retried with backoff.
    unreadable: Vec<UnreadableView>,
    /// The store in use, as it may be shown.
    store: String,
    /// The servers sharing the store (one, on SQLite).
    cluster: Vec<MemberView>,
    /// Agents configured, and how many of them are offline (the details are on /agents).
    agents: usize,
    agents_offline: usize,
}

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    page: &'static str,
    agents: Vec<AgentRowView>,
}

/// One agent, as the ingest page lists it.
struct AgentRowView {
    name: String,
    state: String,
    hosts: String,
    last_contact: String,
    version: String,
    backlog: u64,
    oldest: String,
    stored: u64,
    duplicates: u64,
    rejected: u64,
    last_reject: String,
}

/// One server sharing the store, as the ingest page lists it.
struct MemberView {
    id: String,
    address: String,
    version: String,
    leader: bool,
    heartbeat: String,
}

/// A file that cannot be read, as the ingest page lists it.
struct UnreadableView {
    path: String,
    spool: String,
    error: String,
    attempts: u32,
    since: String,
    next: String,
}

/// When the next attempt is, for people: "in 12s", or "now".
fn rfc3339_or_now(at_ms: i64, now: i64) -> String {
    if at_ms <= now {
        "now".into()
    } else {
        format!("in {}", crate::history::human_duration(at_ms - now))
    }
}

/// Files whose latency the ingest page summarises.
const LATENCY_FILES: usize = 10_000;

/// A latency in ms for people: "0.4 ms" is not possible (the ledger keeps ms), so "< 1 ms".
fn latency_text(ms: i64) -> String {
    match ms {
        i64::MIN..=0 => "< 1 ms".into(),
        1..=9_999 => format!("{ms} ms"),
        _ => crate::history::human_duration(ms),
    }
}

/// p50/p90/p99/max of `values` (any order).
fn latency_summary(mut values: Vec<i64>) -> Vec<(&'static str, String)> {
    if values.is_empty() {
        return Vec::new();
    }
    values.sort_unstable();
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    vec![
        ("p50", latency_text(at(0.5))),
        ("p90", latency_text(at(0.9))),
        ("p99", latency_text(at(0.99))),
        ("max", latency_text(at(1.0))),
    ]
}

/// `GET /ingest`: files ingested and rejected per spool, and the rejected files with their
/// exact error.
pub(crate) async fn ingest(State(state): State<AppState>) -> Result<Response, crate::PageError> {
    let now = crate::now_ms();
    let hour_ago = now - 3_600_000;
    let (spools, rejected, activity, cluster) = crate::read(&state, move |store| {
        Ok((
            store.spool_counts()?,
            store.files(Some(probewatch_store::Outcome::Rejected), 200)?,
            store.ingest_activity(hour_ago, LATENCY_FILES)?,
            store.cluster(60_000)?,
        ))
    })
    .await?;
    let members = cluster
        .instances
        .iter()
        .map(|i| MemberView {
            leader: cluster.leader.as_deref() == Some(i.beat.id.as_str()),
            id: i.beat.id.clone(),
            address: i.beat.address.clone(),
            version: i.beat.version.clone(),
            heartbeat: format!("{:.1} s ago", i.heartbeat_age_ms as f64 / 1000.0),
        })
        .collect();
    let files_since = |since: i64| -> u64 {
        activity
            .minutes
            .iter()
            .filter(|(m, _)| *m + 60_000 > since)
            .map(|(_, n)| n)
            .sum()
    };
    let rate = |files: u64, secs: f64| format!("{:.1}", files as f64 / secs);
    let rate_1m = rate(files_since(now - 60_000), 60.0);
    let rate_1h = rate(files_since(hour_ago), 3600.0);
    let minutes_json =
        serde_json::to_string(&activity.minutes).unwrap_or_else(|_| "[]".to_string());
    let latency_files = activity.latencies_ms.len();
    let latency = latency_summary(activity.latencies_ms);
    let (problems, unreadable) = match state.status.clone() {
        Some(status) => {
            tokio::task::spawn_blocking(move || (status.problems(), status.unreadable_files()))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
        }
        None => (Vec::new(), Vec::new()),
    };
    let unreadable = unreadable
        .into_iter()
        .map(|f| UnreadableView {
            path: f.path,
            spool: f.spool,
            error: f.error,
            attempts: f.attempts,
            since: ago(f.since_ms, now),
            next: rfc3339_or_now(f.next_attempt_ms, now),
        })
        .collect();
    let rejected = rejected
        .into_iter()
        .map(|f| RejectedView {
            at: ago(f.ingested_at_ms, now),
            at_iso: crate::rfc3339(f.ingested_at_ms),
            spool: f.spool,
            path: String::from_utf8_lossy(&f.path).into_owned(),
            kind: f.reject_kind.unwrap_or_default(),
            error: f.error.unwrap_or_default(),
        })
        .collect();
    let agents = state
        .remote
        .as_ref()
        .map(|r| r.agents())
        .unwrap_or_default();
    let html = IngestPage {
        page: "ingest",
        spools,
        rejected,
        rate_1m,
        rate_1h,
        minutes_json,
        from_ms: hour_ago,
        to_ms: now,
        latency,
        latency_files,
        problems,
        unreadable,
        store: state.info.store.clone(),
        cluster: members,
        agents: agents.len(),
        agents_offline: agents.iter().filter(|a| a.state == "offline").count(),
    }
    .render()
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Html(html).into_response())
}

/// `GET /agents`: every configured agent, its state and what this server saw of it.
pub(crate) async fn agents(State(state): State<AppState>) -> Result<Response, crate::PageError> {
    let now = crate::now_ms();
    let agents = state
        .remote
        .as_ref()
        .map(|r| r.agents())
        .unwrap_or_default()
        .into_iter()
        .map(|a| AgentRowView {
            last_contact: if a.last_contact_ms == 0 {
                "not since this server started".into()
            } else {
                ago(a.last_contact_ms, now)
            },
            oldest: if a.backlog_files == 0 {
                "—".into()
            } else {
                crate::history::human_duration(
                    i64::try_from(a.oldest_file_age_ms).unwrap_or(i64::MAX),
                )
            },
            name: a.name,
            state: a.state,
            hosts: a.hosts.join(", "),
            version: a.version,
            backlog: a.backlog_files,
            stored: a.stored,
            duplicates: a.duplicates,
            rejected: a.rejected,
            last_reject: a.last_reject.unwrap_or_default(),
        })
        .collect();
    let html = AgentsPage {
        page: "agents",
        agents,
    }
    .render()
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Html(html).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_pick_from_the_sorted_values() {
        let s = latency_summary((1..=100).rev().collect());
        assert_eq!(
            s,
            vec![
                ("p50", "51 ms".to_string()),
                ("p90", "90 ms".to_string()),
                ("p99", "99 ms".to_string()),
                ("max", "100 ms".to_string())
            ]
        );
        assert!(latency_summary(Vec::new()).is_empty());
        assert_eq!(latency_text(0), "< 1 ms");
        assert_eq!(latency_text(90_000), "1 min 30 s");
    }
}
