//! The check detail page (`/check`): one check's status timeline, availability, duration
//! chart, status changes and recent results over a chosen range; and the JSON behind its
//! chart (`/api/v1/checks/durations`), downsampled on the server to the chart's width.
//!
//! The URL holds the whole view (`probe`, `host`, `check`, `range` or `from`/`to`), so a
//! link shows the same thing to someone else.

use askama::Template;
use axum::Json;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use probewatch_promql::{Matcher, SeriesSource};
use probewatch_store::{HistoryQuery, StatusInterval};
use serde::Deserialize;

use crate::check_state::ago;
use crate::history::{self, Downsampled, TimeRange};
use crate::status_word;
use crate::{ApiError, AppState};

/// `?probe=&host=&check=&range=&from=&to=`
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CheckQuery {
    probe: Option<String>,
    #[serde(default)]
    host: String,
    check: Option<String>,
    range: Option<String>,
    from: Option<String>,
    to: Option<String>,
    /// Chart width in pixels (for the durations API).
    width: Option<usize>,
}

impl CheckQuery {
    fn key(&self) -> Result<(String, String, String), ApiError> {
        let need = |v: &Option<String>, name: &str| {
            v.clone()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| ApiError::BadRequest(format!("{name}= is required")))
        };
        Ok((
            need(&self.probe, "probe")?,
            self.host.clone(),
            need(&self.check, "check")?,
        ))
    }

    fn range(&self, now: i64, tz: &jiff::tz::TimeZone) -> Result<TimeRange, ApiError> {
        history::time_range(
            self.range.as_deref(),
            self.from.as_deref(),
            self.to.as_deref(),
            now,
            tz,
        )
        .map_err(ApiError::BadRequest)
    }
}

/// `path` with the query string that names a check, plus `extra`.
fn check_link(path: &str, probe: &str, host: &str, check: &str, extra: &[(&str, &str)]) -> String {
    let mut pairs = vec![("probe", probe), ("host", host), ("check", check)];
    pairs.extend_from_slice(extra);
    history::href(path, &pairs)
}

/// The link to a check's page.
pub(crate) fn check_href(probe: &str, host: &str, check: &str, extra: &[(&str, &str)]) -> String {
    check_link("/check", probe, host, check, extra)
}

/// A timeline segment as the template draws it.
pub(crate) struct SegmentView {
    pub x: String,
    pub width: String,
    pub status: &'static str,
    pub title: String,
}

/// How a segment's hover title writes its times.
#[derive(Clone, Copy)]
pub(crate) enum TitleTimes<'a> {
    /// Full RFC 3339 times (any range).
    Full,
    /// "14:05–14:20 UTC" in the pages' zone (the overview's 24 hours; a thousand strips
    /// stay light).
    Clock(&'a jiff::tz::TimeZone),
}

/// Segments of `intervals` across `[from, to]`, with hover titles.
pub(crate) fn segment_views(
    intervals: &[StatusInterval],
    from: i64,
    to: i64,
    columns: usize,
    times: TitleTimes<'_>,
) -> Vec<SegmentView> {
    let clock = |ms: i64, tz: &jiff::tz::TimeZone| {
        jiff::Timestamp::from_millisecond(ms)
            .map(|t| tz.to_datetime(t).strftime("%H:%M").to_string())
            .unwrap_or_default()
    };
    history::segments(intervals, from, to, columns)
        .into_iter()
        .map(|s| {
            let plural = if s.results == 1 { "" } else { "s" };
            let name = status_word(s.status);
            let title = match times {
                TitleTimes::Full => format!(
                    "{name} from {} to {} ({} result{plural})",
                    crate::rfc3339(s.from_ms),
                    crate::rfc3339(s.to_ms),
                    s.results
                ),
                TitleTimes::Clock(tz) => format!(
                    "{name} {}–{} {} ({} result{plural})",
                    clock(s.from_ms, tz),
                    clock(s.to_ms, tz),
                    history::zone_name(tz),
                    s.results
                ),
            };
            SegmentView {
                x: format!("{:.2}", s.x),
                width: format!("{:.2}", s.width),
                status: name,
                title,
            }
        })
        .collect()
}

struct ShareRow {
    status: &'static str,
    time: String,
    percent: String,
}

struct ChangeRow {
    status: &'static str,
    from_iso: String,
    to_iso: String,
    length: String,
    results: u64,
}

struct ResultRow {
    at: String,
    at_iso: String,
    status: &'static str,
    duration: String,
    message: String,
}

#[derive(Template)]
#[template(path = "check.html")]
struct CheckPage {
    page: &'static str,
    probe: String,
    host: String,
    check: String,
    state: &'static str,
    state_word: &'static str,
    last_ago: String,
    last_iso: String,
    message: String,
    interval: String,
    ranges: Vec<history::RangeLink>,
    range_name: String,
    from_iso: String,
    to_iso: String,
    from_input: String,
    to_input: String,
    from_ms: i64,
    to_ms: i64,
    ok_percent: String,
    shares: Vec<ShareRow>,
    timeline: Vec<SegmentView>,
    changes: Vec<ChangeRow>,
    changes_more: bool,
    results: Vec<ResultRow>,
    chart_src: String,
    /// The pages' time zone, and its offset at the range's end (for the chart).
    zone: String,
    zone_offset_ms: i64,
    /// Status and alert changes to mark on the chart, JSON.
    marks_json: String,
    /// A file from this probe refused after the check's last result.
    last_rejected: Option<RejectedView>,
    /// The maintenance window the check is under now (empty: none).
    maintenance: String,
    /// Active alerts about this check: (name, state, CSS class).
    alerts: Vec<(String, &'static str, &'static str)>,
    /// The alerts page with a silence for this check filled in.
    silence_href: String,
    /// The metrics explorer on this check's status series.
    explore_href: String,
}

/// A refused file, as the check page mentions it.
struct RejectedView {
    at: String,
    at_iso: String,
    path: String,
    error: String,
}

/// The active alerts whose labels name this check (its probe and check, and its host if it
/// has one): (name, state, CSS class).
fn alerts_of(
    app: &AppState,
    probe: &str,
    host: &str,
    check: &str,
) -> Vec<(String, &'static str, &'static str)> {
    let Some(engine) = &app.alerting else {
        return Vec::new();
    };
    let engine = engine.load();
    let mut out = Vec::new();
    for rule in engine.groups().iter().flat_map(|g| g.rules.iter()) {
        for a in engine.alerts(&rule.key) {
            let is = |name: &str, value: &str| a.labels.get(name).is_some_and(|v| v == value);
            if is("probe", probe) && is("check", check) && (host.is_empty() || is("host", host)) {
                let firing = a.state == probewatch_store::AlertState::Firing;
                out.push((
                    rule.name.clone(),
                    if firing { "firing" } else { "pending" },
                    if firing { "critical" } else { "warning" },
                ));
            }
        }
    }
    out
}

/// Newest alert changes looked at for the ones about the page's check.
const ALERT_EVENTS_SEARCHED: usize = 2_000;
/// Most marks on the chart (status changes and alert changes together).
const MARKS_SHOWN: usize = 200;

/// The marks on the duration chart: where the status changed, and where an alert about
/// this check changed state, as JSON for the page's script (`t` ms, `text`, `kind`).
fn chart_marks(
    intervals: &[probewatch_store::StatusInterval],
    events: &[probewatch_store::AlertEvent],
    key: (&str, &str, &str),
    from: i64,
    to: i64,
) -> String {
    let mut marks: Vec<serde_json::Value> = Vec::new();
    for pair in intervals.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        if after.status != before.status && (from..=to).contains(&after.start_ms) {
            marks.push(serde_json::json!({
                "t": after.start_ms,
                "text": format!("{} → {}", status_word(before.status), status_word(after.status)),
                "kind": status_word(after.status),
            }));
        }
    }
    let (probe, host, check) = key;
    for e in events.iter().filter(|e| (from..=to).contains(&e.at_ms)) {
        let labels: std::collections::BTreeMap<String, String> =
            probewatch_core::labels::parse_canonical(&e.labels)
                .unwrap_or_default()
                .into_iter()
                .collect();
        let is = |name: &str, value: &str| labels.get(name).is_some_and(|v| v == value);
        if is("probe", probe) && is("check", check) && (host.is_empty() || is("host", host)) {
            marks.push(serde_json::json!({
                "t": e.at_ms,
                "text": format!("{} {}", e.rule_key.split('\u{0}').nth(1).unwrap_or(""), e.event),
                "kind": if e.event == "resolved" { "alert-resolved" } else { "alert" },
            }));
        }
    }
    marks.sort_by_key(|m| std::cmp::Reverse(m["t"].as_i64().unwrap_or(0)));
    marks.truncate(MARKS_SHOWN);
    serde_json::Value::Array(marks).to_string()
}

/// Newest refused files looked at for one that came from the page's probe.
const REJECTIONS_SEARCHED: usize = 500;

/// Status changes listed on the page, newest first.
const CHANGES_SHOWN: usize = 200;
/// Results listed on the page, newest first.
const RESULTS_SHOWN: usize = 100;

/// `<input type="datetime-local">`'s value for a time (in the pages' zone, to the minute).
fn input_value(ms: i64, tz: &jiff::tz::TimeZone) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| tz.to_datetime(t).strftime("%Y-%m-%dT%H:%M").to_string())
        .unwrap_or_default()
}

/// `GET /check`
pub(crate) async fn check_page(
    State(app): State<AppState>,
    Query(q): Query<CheckQuery>,
) -> Result<Response, crate::PageError> {
    let now = crate::now_ms();
    let (probe, host, check) = q.key()?;
    let range = q.range(now, &app.time_zone())?;
    let (from, to) = (range.from_ms, range.to_ms);
    let key = (probe.clone(), host.clone(), check.clone());
    let found = crate::read(&app, move |store| {
        let Some(row) = store.find_check(&key.0, &key.1, &key.2)? else {
            return Ok(None);
        };
        let intervals = store.check_intervals(&[row.id], from, to)?.remove(0);
        let results = store.check_history(&HistoryQuery {
            probe: key.0.clone(),
            check: key.2.clone(),
            host: Some(key.1.clone()),
            from_ms: from,
            to_ms: to,
            limit: RESULTS_SHOWN,
            newest_first: true,
        })?;
        // The newest refused file that named this probe (see `naming_probe` in ingest).
        let named = format!("probe {:?}", key.0);
        let rejected = store
            .files(
                Some(probewatch_store::Outcome::Rejected),
                REJECTIONS_SEARCHED,
            )?
            .into_iter()
            .find(|f| f.error.as_deref().is_some_and(|e| e.contains(&named)));
        let events = store.alert_events(ALERT_EVENTS_SEARCHED)?;
        Ok(Some((row, intervals, results, rejected, events)))
    })
    .await?;
    let Some((row, intervals, results, rejected, events)) = found else {
        return Err(ApiError::NotFound(format!(
            "no check {check:?} of probe {probe:?} on host {host:?}"
        ))
        .into());
    };
    let context = crate::check_state::StateContext::of(&app, now);
    let (state_class, state_word) = crate::check_state::shown_state(&row, now, &context);
    let maintenance = context.maintenance_of(&row).map(|w| {
        if w.comment.is_empty() {
            w.name.clone()
        } else {
            format!("{}: {}", w.name, w.comment)
        }
    });
    // Every window that covers the check, whenever it was on in the range.
    let maintenance_spans: Vec<(i64, i64)> = app
        .maintenance
        .as_ref()
        .map(|w| {
            w.load()
                .iter()
                .filter(|w| w.covers_check(&row.probe, &row.host, &row.check))
                .flat_map(|w| w.spans(from, to))
                .collect()
        })
        .unwrap_or_default();
    let availability = history::availability(&intervals, from, to, now, &maintenance_spans);
    let covered = availability.covered_ms();
    let mut shares: Vec<ShareRow> = (0u8..4)
        .filter(|s| availability.by_status[usize::from(*s)] > 0)
        .map(|s| {
            let ms = availability.by_status[usize::from(s)];
            ShareRow {
                status: status_word(s),
                time: history::human_duration(ms),
                percent: format!("{:.3} %", 100.0 * ms as f64 / covered.max(1) as f64),
            }
        })
        .collect();
    if availability.maintenance_ms > 0 {
        shares.push(ShareRow {
            status: "maintenance",
            time: history::human_duration(availability.maintenance_ms),
            percent: "—".into(),
        });
    }
    if availability.no_data_ms > 0 {
        shares.push(ShareRow {
            status: "nodata",
            time: history::human_duration(availability.no_data_ms),
            percent: "—".into(),
        });
    }
    let interval = match (row.interval_ms.filter(|v| *v > 0), row.usual_interval_ms) {
        (Some(ms), _) => format!("{} (declared)", history::human_duration(ms)),
        (None, Some(ms)) if ms > 0 => format!("{} (usual)", history::human_duration(ms)),
        _ => "unknown".into(),
    };
    let ranges = history::range_links(&range.name, |name| {
        check_href(&probe, &host, &check, &[("range", name)])
    });
    let changes_more = intervals.len() > CHANGES_SHOWN;
    let changes = intervals
        .iter()
        .rev()
        .take(CHANGES_SHOWN)
        .map(|i| ChangeRow {
            status: status_word(i.status),
            from_iso: crate::rfc3339(i.start_ms),
            to_iso: crate::rfc3339(i.end_ms),
            length: history::human_duration(i.end_ms - i.start_ms),
            results: i.results,
        })
        .collect();
    let results = results
        .into_iter()
        .map(|r| ResultRow {
            at: ago(r.time_ms, now),
            at_iso: crate::rfc3339(r.time_ms),
            status: status_word(r.status),
            duration: r
                .duration_seconds
                .map_or_else(String::new, |d| format!("{d:.3} s")),
            message: r.message,
        })
        .collect();
    let (from_s, to_s) = (from.to_string(), to.to_string());
    let mut matchers = vec![
        probewatch_alerting::silence::matcher_text("probe", &probe),
        probewatch_alerting::silence::matcher_text("check", &check),
    ];
    if !host.is_empty() {
        matchers.push(probewatch_alerting::silence::matcher_text("host", &host));
    }
    let selector = format!("probe_check_status{{{}}}", matchers.join(","));
    // Refused after the check's last result: the probe's newest file is not in the history.
    let last_rejected = rejected
        .filter(|f| f.ingested_at_ms > row.time_ms)
        .map(|f| RejectedView {
            at: ago(f.ingested_at_ms, now),
            at_iso: crate::rfc3339(f.ingested_at_ms),
            path: String::from_utf8_lossy(&f.path).into_owned(),
            error: f.error.unwrap_or_default(),
        });
    let marks_json = chart_marks(&intervals, &events, (&probe, &host, &check), from, to);
    let page = CheckPage {
        marks_json,
        last_rejected,
        maintenance: maintenance.unwrap_or_default(),
        alerts: alerts_of(&app, &probe, &host, &check),
        silence_href: crate::history::href("/alerts", &[("silence", &matchers.join("\n"))]),
        explore_href: crate::history::href(
            "/graph",
            &[("expr", &selector), ("range", &range.name)],
        ),
        page: "overview",
        state: state_class,
        state_word,
        last_ago: ago(row.time_ms, now),
        last_iso: crate::rfc3339(row.time_ms),
        message: row.message.clone(),
        interval,
        ranges,
        range_name: range.name.clone(),
        from_iso: crate::rfc3339(from),
        to_iso: crate::rfc3339(to),
        from_input: input_value(from, &app.time_zone()),
        to_input: input_value(to, &app.time_zone()),
        zone: history::zone_name(&app.time_zone()),
        zone_offset_ms: history::zone_offset_ms(&app.time_zone(), to),
        from_ms: from,
        to_ms: to,
        ok_percent: availability
            .ok_percent()
            .map_or_else(|| "no data".into(), |p| format!("{p:.3} %")),
        shares,
        timeline: segment_views(&intervals, from, to, 1000, TitleTimes::Full),
        changes,
        changes_more,
        results,
        chart_src: check_link(
            "/api/v1/checks/durations",
            &probe,
            &host,
            &check,
            &[("from", &from_s), ("to", &to_s)],
        ),
        probe,
        host,
        check,
    };
    let html = page
        .render()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Html(html).into_response())
}

/// `GET /api/v1/checks/durations?probe=&host=&check=&from=&to=&width=`: the check's
/// duration series over the range, reduced to min/max per pixel column when it has more
/// samples than the chart has columns.
pub(crate) async fn durations(
    State(app): State<AppState>,
    Query(q): Query<CheckQuery>,
) -> Result<Json<Downsampled>, ApiError> {
    let now = crate::now_ms();
    let (probe, host, check) = q.key()?;
    let range = q.range(now, &app.time_zone())?;
    let width = q.width.unwrap_or(1000).clamp(10, 4000);
    let points = crate::query_gate::run(&app, move |source, guard| {
        let matchers = [
            ("__name__", "probe_check_duration_seconds"),
            ("probe", probe.as_str()),
            ("host", host.as_str()),
            ("check", check.as_str()),
        ]
        .iter()
        .map(|(n, v)| Matcher::new(n, "=", v))
        .collect::<Result<Vec<_>, _>>()?;
        let series = source.select(&matchers, range.from_ms, range.to_ms, guard.remaining())?;
        // One check may feed several series (the same probe in two spools); merge them.
        let mut points: Vec<(i64, f64)> = series.into_iter().flat_map(|s| s.points).collect();
        points.sort_by_key(|p| p.0);
        Ok(points)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(history::downsample(
        &points,
        range.from_ms,
        range.to_ms,
        width,
    )))
}
