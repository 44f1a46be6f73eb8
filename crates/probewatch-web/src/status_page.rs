//! The public status page and badges, for the people a service serves: chosen groups of
//! checks, each with its state now, its uptime per day over 90 days and announcements —
//! what Uptime Kuma and Gatus users publish — and SVG badges (state, uptime over 24 h, 7 d
//! or 30 d, response time) to embed elsewhere. Public means no login, even behind
//! `[access]`: so only checks inside a configured group are ever shown, a badge names a
//! group, not a check, and anything else answers 404 exactly as an unknown group does.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use probewatch_promql::Matcher;
use probewatch_store::{CheckRow, StatusInterval};
use serde::Deserialize;

use crate::{ApiError, AppState};

/// One group on the status page: a name and the matchers its checks meet (on `probe`,
/// `host` and `check`).
#[derive(Debug, Clone)]
pub struct StatusGroup {
    /// Shown name, and the badge path (`/badge/<name>/…`).
    pub name: String,
    /// All must hold.
    pub matchers: Vec<Matcher>,
}

impl StatusGroup {
    /// Whether a check belongs to the group.
    pub fn covers(&self, c: &CheckRow) -> bool {
        self.matchers.iter().all(|m| {
            m.matches(match m.name.as_str() {
                "probe" => &c.probe,
                "host" => &c.host,
                "check" => &c.check,
                _ => "",
            })
        })
    }
}

/// A notice on the status page, shown until it expires.
#[derive(Debug, Clone)]
pub struct Announcement {
    /// The text.
    pub text: String,
    /// Shown until then (ms since the epoch); None: until removed from the configuration.
    pub until_ms: Option<i64>,
}

/// The status page's configuration.
#[derive(Debug, Clone, Default)]
pub struct StatusPage {
    /// Its title.
    pub title: String,
    /// Its groups, in order.
    pub groups: Vec<StatusGroup>,
    /// Its announcements, in order.
    pub announcements: Vec<Announcement>,
}

/// Days of history on the page.
const DAYS: i64 = 90;
const DAY_MS: i64 = 86_400_000;

/// One day of a group.
struct DayView {
    /// `fill-ok`-style class: the worst it got that day (by uptime).
    class: &'static str,
    title: String,
}

/// One group as the page shows it.
struct GroupView {
    name: String,
    state: &'static str,
    state_word: &'static str,
    uptime_90d: String,
    days: Vec<DayView>,
}

#[derive(Template)]
#[template(path = "status.html")]
struct StatusTemplate {
    title: String,
    overall: &'static str,
    overall_word: &'static str,
    announcements: Vec<String>,
    groups: Vec<GroupView>,
    updated_iso: String,
}

/// The uptime of `intervals` (many checks') over `[from, to]`: the share of the time with
/// results that was ok, or None without data.
fn uptime(intervals: &[Vec<StatusInterval>], from: i64, to: i64, now: i64) -> Option<f64> {
    let (mut ok, mut covered) = (0i64, 0i64);
    for check in intervals {
        let a = crate::history::availability(check, from, to, now, &[]);
        ok += a.by_status[0];
        covered += a.covered_ms();
    }
    (covered > 0).then(|| 100.0 * ok as f64 / covered as f64)
}

/// A group's state now: the worst shown state of its checks, in words people read.
fn group_state(
    checks: &[&CheckRow],
    now: i64,
    context: &crate::check_state::StateContext,
) -> (&'static str, &'static str) {
    let states: Vec<&str> = checks
        .iter()
        .map(|c| crate::check_state::shown_state(c, now, context).0)
        .collect();
    if states.is_empty() {
        ("unknown", "no data")
    } else if states.contains(&"critical") {
        ("critical", "outage")
    } else if states
        .iter()
        .any(|s| matches!(*s, "warning" | "unknown" | "stale" | "offline"))
    {
        ("warning", "degraded")
    } else if states.iter().all(|s| *s == "maintenance") {
        ("maintenance", "maintenance")
    } else {
        ("ok", "operational")
    }
}

/// The configured status page and the checks of each of its groups.
async fn gather(
    state: &AppState,
) -> Result<Option<(std::sync::Arc<StatusPage>, Vec<Vec<CheckRow>>)>, ApiError> {
    let Some(page) = state.status_page() else {
        return Ok(None);
    };
    let rows = crate::read(state, |store| store.latest_checks()).await?;
    let per_group = page
        .groups
        .iter()
        .map(|g| rows.iter().filter(|c| g.covers(c)).cloned().collect())
        .collect();
    Ok(Some((page, per_group)))
}

/// `GET /status`: the public status page (404 when none is configured).
pub(crate) async fn page(State(state): State<AppState>) -> Result<Response, crate::PageError> {
    let now = crate::now_ms();
    let Some((page, per_group)) = gather(&state).await? else {
        return Err(ApiError::NotFound("no status page is configured".into()).into());
    };
    // Days as the pages' zone has them.
    let tz = state.time_zone();
    let day_start = |date: jiff::civil::Date| {
        date.to_datetime(jiff::civil::Time::midnight())
            .to_zoned_datetime(tz.clone())
            .map_or(0, |z| z.timestamp().as_millisecond())
    };
    let today = jiff::Timestamp::from_millisecond(now)
        .map(|t| tz.to_datetime(t).date())
        .unwrap_or_default();
    let first_day = today.saturating_sub(jiff::ToSpan::days(DAYS - 1));
    let from = day_start(first_day);
    let ids: Vec<Vec<i64>> = per_group
        .iter()
        .map(|checks| checks.iter().map(|c| c.id).collect())
        .collect();
    let intervals = crate::read(&state, move |store| {
        ids.iter()
            .map(|ids| store.check_intervals(ids, from, now))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    let context = crate::check_state::StateContext::of(&state, now);
    let mut worst = 0;
    let rank = |s: &str| match s {
        "critical" => 3,
        "warning" => 2,
        "unknown" => 1,
        _ => 0,
    };
    let groups: Vec<GroupView> = page
        .groups
        .iter()
        .zip(per_group.iter().zip(intervals.iter()))
        .map(|(g, (checks, intervals))| {
            let refs: Vec<&CheckRow> = checks.iter().collect();
            let (state, word) = group_state(&refs, now, &context);
            worst = worst.max(rank(state));
            let days = (0..DAYS)
                .map(|d| {
                    let date = first_day.saturating_add(jiff::ToSpan::days(d));
                    let start = day_start(date);
                    let end = day_start(date.saturating_add(jiff::ToSpan::days(1))).min(now);
                    let day = date.strftime("%Y-%m-%d").to_string();
                    match uptime(intervals, start, end, now) {
                        None => DayView {
                            class: "fill-nodata",
                            title: format!("{day}: no data"),
                        },
                        Some(u) => DayView {
                            class: if u >= 99.9 {
                                "fill-ok"
                            } else if u >= 95.0 {
                                "fill-warning"
                            } else {
                                "fill-critical"
                            },
                            title: format!("{day}: {u:.2} % up"),
                        },
                    }
                })
                .collect();
            GroupView {
                name: g.name.clone(),
                state,
                state_word: word,
                uptime_90d: uptime(intervals, from, now, now)
                    .map_or_else(|| "no data".into(), |u| format!("{u:.2} %")),
                days,
            }
        })
        .collect();
    let (overall, overall_word) = match worst {
        3 => ("critical", "Some services are down"),
        2 => ("warning", "Some services are degraded"),
        _ => ("ok", "All services are operational"),
    };
    let html = StatusTemplate {
        title: page.title.clone(),
        overall,
        overall_word,
        announcements: page
            .announcements
            .iter()
            .filter(|a| a.until_ms.is_none_or(|u| now < u))
            .map(|a| a.text.clone())
            .collect(),
        groups,
        updated_iso: crate::rfc3339(now),
    }
    .render()
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Html(html).into_response())
}

/// `?window=24h|7d|30d`
#[derive(Deserialize)]
pub(crate) struct BadgeQuery {
    window: Option<String>,
}

/// A badge as shields.io draws them: a grey label and a coloured value.
fn badge(label: &str, value: &str, colour: &str) -> Response {
    // Wide enough for the text at 11 px Verdana, about 7 px a character.
    let width = |t: &str| 10 + 7 * t.chars().count();
    let (lw, vw) = (width(label), width(value));
    let escape = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let (label, value) = (escape(label), escape(value));
    let svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" aria-label="{label}: {value}"><title>{label}: {value}</title><rect width="{lw}" height="20" fill="#555"/><rect x="{lw}" width="{vw}" height="20" fill="{colour}"/><g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11"><text x="{lx}" y="14">{label}</text><text x="{vx}" y="14">{value}</text></g></svg>"##,
        total = lw + vw,
        lx = lw / 2,
        vx = lw + vw / 2,
    );
    let mut response = (StatusCode::OK, svg).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=60"),
    );
    response
}

/// `GET /badge/<group>/<kind>.svg`: `status`, `uptime` (`?window=24h|7d|30d`, default 24h)
/// or `response` (the mean of the checks' latest durations). 404 for anything not on the
/// status page.
pub(crate) async fn badge_svg(
    State(state): State<AppState>,
    Path((group, kind)): Path<(String, String)>,
    Query(q): Query<BadgeQuery>,
) -> Result<Response, ApiError> {
    let now = crate::now_ms();
    let not_found = || ApiError::NotFound("no such badge".into());
    let Some((page, per_group)) = gather(&state).await? else {
        return Err(not_found());
    };
    let Some(at) = page.groups.iter().position(|g| g.name == group) else {
        return Err(not_found());
    };
    let checks = &per_group[at];
    match kind.as_str() {
        "status.svg" => {
            let refs: Vec<&CheckRow> = checks.iter().collect();
            let context = crate::check_state::StateContext::of(&state, now);
            let (s, word) = group_state(&refs, now, &context);
            let colour = match s {
                "ok" => "#2e8540",
                "critical" => "#c4262e",
                "warning" => "#b06f00",
                _ => "#6b6b6b",
            };
            Ok(badge(&group, word, colour))
        }
        "uptime.svg" => {
            let (window, ms) = match q.window.as_deref().unwrap_or("24h") {
                "24h" => ("24h", DAY_MS),
                "7d" => ("7d", 7 * DAY_MS),
                "30d" => ("30d", 30 * DAY_MS),
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "window={other:?}: use 24h, 7d or 30d"
                    )));
                }
            };
            let ids: Vec<i64> = checks.iter().map(|c| c.id).collect();
            let from = now - ms;
            let intervals =
                crate::read(&state, move |store| store.check_intervals(&ids, from, now)).await?;
            let label = format!("uptime {window}");
            Ok(match uptime(&intervals, from, now, now) {
                None => badge(&label, "no data", "#6b6b6b"),
                Some(u) => badge(
                    &label,
                    &format!("{u:.2}%"),
                    if u >= 99.9 {
                        "#2e8540"
                    } else if u >= 95.0 {
                        "#b06f00"
                    } else {
                        "#c4262e"
                    },
                ),
            })
        }
        "response.svg" => {
            let durations: Vec<f64> = checks.iter().filter_map(|c| c.duration_seconds).collect();
            Ok(if durations.is_empty() {
                badge("response", "no data", "#6b6b6b")
            } else {
                let mean = durations.iter().sum::<f64>() / durations.len() as f64;
                badge("response", &format!("{:.0} ms", mean * 1000.0), "#0366d6")
            })
        }
        _ => Err(not_found()),
    }
}
