//! The overview (`/`): every check's state, problems first. A summary counts every check;
//! one page of checks is read and rendered, so its cost stays flat from 1,000 to 100,000
//! checks; the live refresh fetches the table fragment only when its ETag changed.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use probewatch_store::{CheckRow, StatusInterval};
use serde::Deserialize;

use crate::check_page::{SegmentView, TitleTimes, check_href, segment_views};
use crate::check_state::{StateContext, ago, duration_text, is_problem, shown_state, since_ms};
use crate::notifications_page::{FailingReceiver, NOTIFICATIONS_SHOWN, failing_receivers};
use crate::{ApiError, AppState};

/// One check as the overview shows it.
pub(crate) struct CheckView {
    state: &'static str,
    state_word: &'static str,
    probe: String,
    host: String,
    check: String,
    time_iso: String,
    ago: String,
    /// How long it has been in its state ("12 min"), and since when.
    for_how_long: String,
    since_iso: String,
    message: String,
    href: String,
    strip: Vec<SegmentView>,
    /// The strip in words ("last 24 hours: 97 % ok, 3 % critical"), its text alternative.
    strip_label: String,
}

/// One row of "what is wrong now" at the top of the overview: a check with a problem, or a
/// probe that fell silent on a host, collapsed into one row for all its checks.
pub(crate) struct ProblemView {
    state: &'static str,
    state_word: &'static str,
    probe: String,
    host: String,
    /// The check; empty for a silent probe's row.
    check: String,
    href: String,
    /// Checks this row stands for (more than one: a silent probe).
    checks: usize,
    /// "12 min" in this state, and the instant.
    for_how_long: String,
    since_iso: String,
    /// Where the state began (the check page from there), for a check.
    since_href: String,
    message: String,
}

/// Checks under one heading (a probe or a host).
pub(crate) struct GroupView {
    title: String,
    checks: Vec<CheckView>,
}

/// A group with problems, for the summary at the top of the overview.
pub(crate) struct ProblemGroupView {
    title: String,
    href: String,
    /// Count per problem state, worst first (`critical`, `warning`, `unknown`, `stale`).
    counts: Vec<(&'static str, usize)>,
    problems: usize,
    checks: usize,
}

/// A count in the summary, with the link that filters to it.
pub(crate) struct CountView {
    state: &'static str,
    count: usize,
    href: String,
}

/// Where the shown checks are in the filtered list, and links to the pages around.
pub(crate) struct PagerView {
    first: usize,
    last: usize,
    shown: usize,
    page: usize,
    pages: usize,
    prev: Option<String>,
    next: Option<String>,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage<'a> {
    page: &'static str,
    q: &'a str,
    status: &'a str,
    group: &'a str,
    within: &'a str,
    status_options: &'a [(&'a str, &'a str)],
    counts: String,
    total: usize,
    count_links: Vec<CountView>,
    problem_groups: Vec<ProblemGroupView>,
    /// The checks table (`checks_table.html`), rendered once for the page and the refresh.
    table: String,
    /// Receivers whose notifications wait after failed attempts (a banner says so).
    failing: Vec<FailingReceiver>,
}

#[derive(Template)]
#[template(path = "checks_table.html")]
struct ChecksFragment {
    problems: Vec<ProblemView>,
    /// Problems beyond those shown, and the link to all of them.
    more_problems: usize,
    all_problems_href: String,
    groups: Vec<GroupView>,
    pager: PagerView,
    filtered: bool,
}

/// `?q=&status=&group=&in=&page=&fragment=`
#[derive(Debug, Default, Deserialize)]
pub(crate) struct OverviewQuery {
    q: Option<String>,
    status: Option<String>,
    group: Option<String>,
    /// Only the group (probe or host, as `group` says) with exactly this name.
    #[serde(rename = "in")]
    within: Option<String>,
    page: Option<usize>,
    fragment: Option<String>,
}

impl OverviewQuery {
    /// A link to the overview with these filters and `change` applied.
    fn href(&self, change: &[(&str, &str)]) -> String {
        crate::history::href_with(
            "/",
            &[
                ("q", self.q.clone()),
                ("status", self.status.clone()),
                ("group", self.group.clone()),
                ("in", self.within.clone()),
                ("page", self.page.map(|p| p.to_string())),
            ],
            change,
        )
    }
}

const STATUS_OPTIONS: &[(&str, &str)] = &[
    ("", "any"),
    ("problem", "not ok"),
    ("ok", "ok"),
    ("warning", "warning"),
    ("critical", "critical"),
    ("unknown", "unknown"),
    ("stale", "stale"),
    ("offline", "agent offline"),
    ("maintenance", "maintenance"),
];

/// Checks on one page of the overview: enough to scroll, few enough that a page of a
/// 100,000-check fleet renders in milliseconds.
pub const OVERVIEW_PAGE: usize = 200;

/// Groups with problems listed in the summary.
const PROBLEM_GROUPS: usize = 12;

/// How bad a state is: the overview shows the worst first.
fn severity(state: &str) -> u8 {
    match state {
        "critical" => 0,
        "warning" => 1,
        "unknown" => 2,
        "stale" => 3,
        "offline" => 4,
        _ => 5,
    }
}

/// The overview's status strip covers this long, in this many columns.
const STRIP_MS: i64 = 24 * 3_600_000;
const STRIP_COLUMNS: usize = 96;

/// The overview as planned from every check's latest result: the counts, the groups with
/// problems, and the page of checks to show (in order: worst group first, worst check first).
pub(crate) struct OverviewPlan {
    total: usize,
    counts: std::collections::BTreeMap<&'static str, usize>,
    shown: usize,
    page: usize,
    pages: usize,
    /// The page's checks with their state, word and group title.
    rows: Vec<(CheckRow, &'static str, &'static str, String)>,
    /// What is wrong, worst first and newest first inside a state, silent probes
    /// collapsed; at most [`PROBLEMS_SHOWN`].
    problems: Vec<Problem>,
    /// How many problem rows there are in all.
    problem_rows: usize,
    problem_groups: Vec<(
        String,
        std::collections::BTreeMap<&'static str, usize>,
        usize,
    )>,
    filtered: bool,
}

/// Problems listed at the top of the overview; the rest are one click away.
const PROBLEMS_SHOWN: usize = 50;

/// A row of "what is wrong now", before it is rendered.
pub(crate) enum Problem {
    /// One check with a problem.
    Check {
        row: CheckRow,
        state: &'static str,
        word: &'static str,
    },
    /// Every check of a probe on a host is silent.
    Silent {
        probe: String,
        host: String,
        state: &'static str,
        word: &'static str,
        checks: usize,
        /// The newest of their last results.
        last_ms: i64,
    },
}

impl Problem {
    fn state(&self) -> &'static str {
        match self {
            Problem::Check { state, .. } | Problem::Silent { state, .. } => state,
        }
    }

    /// When the problem began.
    fn since_ms(&self) -> i64 {
        match self {
            Problem::Check { row, state, .. } => since_ms(row, state),
            Problem::Silent { last_ms, .. } => *last_ms,
        }
    }
}

/// The problems among `kept`: worst state first, then the newest change first (what just
/// broke is what an operator looks at first); a probe whose checks on a host are all silent
/// is one row.
fn problems_of(kept: &[(CheckRow, &'static str, &'static str, String)]) -> Vec<Problem> {
    use std::collections::HashMap;
    // Per probe and host: checks, silent checks, newest last result.
    let mut pairs: HashMap<(&str, &str), (usize, usize, i64)> = HashMap::new();
    for (row, state, _, _) in kept {
        let pair = pairs
            .entry((row.probe.as_str(), row.host.as_str()))
            .or_insert((0, 0, i64::MIN));
        pair.0 += 1;
        if matches!(*state, "stale" | "offline") {
            pair.1 += 1;
            pair.2 = pair.2.max(row.time_ms);
        }
    }
    let mut out: Vec<Problem> = Vec::new();
    let mut collapsed: std::collections::HashSet<(&str, &str)> = Default::default();
    for (row, state, word, _) in kept.iter().filter(|k| is_problem(k.1)) {
        let key = (row.probe.as_str(), row.host.as_str());
        let (checks, silent, last_ms) = pairs.get(&key).copied().unwrap_or_default();
        if matches!(*state, "stale" | "offline") && checks == silent && checks > 1 {
            if collapsed.insert(key) {
                out.push(Problem::Silent {
                    probe: row.probe.clone(),
                    host: row.host.clone(),
                    state,
                    word,
                    checks,
                    last_ms,
                });
            }
            continue;
        }
        out.push(Problem::Check {
            row: row.clone(),
            state,
            word,
        });
    }
    out.sort_by(|a, b| {
        severity(a.state())
            .cmp(&severity(b.state()))
            .then_with(|| b.since_ms().cmp(&a.since_ms()))
    });
    out
}

/// Counts every check, filters, orders problems first and cuts out the requested page.
/// Linear in the number of checks apart from one sort.
pub(crate) fn plan(
    rows: Vec<CheckRow>,
    q: &OverviewQuery,
    now: i64,
    context: &StateContext,
) -> OverviewPlan {
    plan_pages(rows, q, now, OVERVIEW_PAGE, context)
}

fn plan_pages(
    rows: Vec<CheckRow>,
    q: &OverviewQuery,
    now: i64,
    page_size: usize,
    context: &StateContext,
) -> OverviewPlan {
    use std::collections::{BTreeMap, HashMap};
    let text = q.q.as_deref().unwrap_or("").trim().to_lowercase();
    let status = q.status.as_deref().unwrap_or("");
    let by_host = q.group.as_deref() == Some("host");
    let within = q.within.as_deref().filter(|w| !w.is_empty());
    let total = rows.len();
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    // Per group: problem counts by state, and checks.
    let mut group_stats: HashMap<String, (BTreeMap<&'static str, usize>, usize)> = HashMap::new();
    let mut kept: Vec<(CheckRow, &'static str, &'static str, String)> = Vec::new();
    for row in rows {
        let (state, word) = shown_state(&row, now, context);
        *counts.entry(state).or_insert(0) += 1;
        let title = match (by_host, row.host.is_empty()) {
            (true, true) => "(no host)".to_string(),
            (true, false) => row.host.clone(),
            (false, _) => row.probe.clone(),
        };
        let stats = group_stats.entry(title.clone()).or_default();
        stats.1 += 1;
        if is_problem(state) {
            *stats.0.entry(state).or_insert(0) += 1;
        }
        let text_ok = text.is_empty()
            || [&row.probe, &row.host, &row.check, &row.message]
                .iter()
                .any(|f| f.to_lowercase().contains(&text));
        let status_ok = match status {
            "" => true,
            "problem" => is_problem(state),
            s => s == state,
        };
        if text_ok && status_ok && within.is_none_or(|w| w == title) {
            kept.push((row, state, word, title));
        }
    }
    // Worst group first (by its worst check), then by name; inside, worst check first.
    let mut group_rank: HashMap<&str, u8> = HashMap::new();
    for (_, state, _, title) in &kept {
        let rank = group_rank.entry(title.as_str()).or_insert(u8::MAX);
        *rank = (*rank).min(severity(state));
    }
    let group_rank: HashMap<String, u8> = group_rank
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    kept.sort_by(|a, b| {
        let ga = group_rank.get(&a.3).copied().unwrap_or(u8::MAX);
        let gb = group_rank.get(&b.3).copied().unwrap_or(u8::MAX);
        ga.cmp(&gb)
            .then_with(|| a.3.cmp(&b.3))
            .then_with(|| severity(a.1).cmp(&severity(b.1)))
            .then_with(|| {
                // Problems: the newest change first; the rest by name.
                if !is_problem(a.1) {
                    std::cmp::Ordering::Equal
                } else {
                    since_ms(&b.0, b.1).cmp(&since_ms(&a.0, a.1))
                }
            })
            .then_with(|| a.0.check.cmp(&b.0.check))
            .then_with(|| a.0.host.cmp(&b.0.host))
            .then_with(|| a.0.probe.cmp(&b.0.probe))
    });
    let shown = kept.len();
    let pages = shown.div_ceil(page_size).max(1);
    let page = q.page.unwrap_or(1).clamp(1, pages);
    // What is wrong heads the first page only.
    let mut problems = if page == 1 {
        problems_of(&kept)
    } else {
        Vec::new()
    };
    let problem_rows = problems.len();
    problems.truncate(PROBLEMS_SHOWN);
    let rows: Vec<_> = kept
        .into_iter()
        .skip((page - 1).saturating_mul(page_size))
        .take(page_size)
        .collect();
    let mut problem_groups: Vec<(String, BTreeMap<&'static str, usize>, usize)> = group_stats
        .into_iter()
        .filter(|(_, (problems, _))| !problems.is_empty())
        .map(|(title, (problems, checks))| (title, problems, checks))
        .collect();
    problem_groups.sort_by(|a, b| {
        let worst = |m: &BTreeMap<&str, usize>| m.keys().map(|s| severity(s)).min();
        let many = |m: &BTreeMap<&str, usize>| m.values().sum::<usize>();
        worst(&a.1)
            .cmp(&worst(&b.1))
            .then_with(|| many(&b.1).cmp(&many(&a.1)))
            .then_with(|| a.0.cmp(&b.0))
    });
    OverviewPlan {
        total,
        counts,
        shown,
        page,
        pages,
        rows,
        problems,
        problem_rows,
        problem_groups,
        filtered: shown < total,
    }
}

/// The problem rows as the template shows them.
fn problem_views(problems: &[Problem], q: &OverviewQuery, now: i64) -> Vec<ProblemView> {
    problems
        .iter()
        .map(|p| {
            let since = p.since_ms();
            let since_iso = jiff::Timestamp::from_millisecond(since)
                .map_or_else(|_| String::new(), |t| t.to_string());
            match p {
                Problem::Check { row, state, word } => {
                    let from = (since - 5 * 60_000).to_string();
                    ProblemView {
                        state,
                        state_word: word,
                        probe: row.probe.clone(),
                        host: row.host.clone(),
                        check: row.check.clone(),
                        href: check_href(&row.probe, &row.host, &row.check, &[]),
                        checks: 1,
                        for_how_long: duration_text(since, now),
                        since_iso,
                        since_href: check_href(
                            &row.probe,
                            &row.host,
                            &row.check,
                            &[("from", &from)],
                        ),
                        message: row.message.clone(),
                    }
                }
                Problem::Silent {
                    probe,
                    host,
                    state,
                    word,
                    checks,
                    ..
                } => {
                    let href = q.href(&[("q", probe), ("status", state), ("in", ""), ("page", "")]);
                    ProblemView {
                        state,
                        state_word: word,
                        probe: probe.clone(),
                        host: host.clone(),
                        check: String::new(),
                        since_href: href.clone(),
                        href,
                        checks: *checks,
                        for_how_long: duration_text(since, now),
                        since_iso,
                        message: format!(
                            "{} for {}, {checks} checks",
                            if *state == "offline" {
                                "agent offline"
                            } else {
                                "silent"
                            },
                            duration_text(since, now)
                        ),
                    }
                }
            }
        })
        .collect()
}

/// The one-line summary: `N checks: 3 critical, 97 ok; 3 shown`.
fn summary_line(plan: &OverviewPlan) -> String {
    let parts: Vec<String> = plan
        .counts
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    format!(
        "{} checks: {}{}",
        plan.total,
        parts.join(", "),
        if plan.filtered {
            format!("; {} shown", plan.shown)
        } else {
            String::new()
        }
    )
}

/// The page's checks, grouped, each with its 24-hour strip.
fn group_views(
    rows: Vec<(CheckRow, &'static str, &'static str, String)>,
    intervals: Vec<Vec<StatusInterval>>,
    now: i64,
    tz: &jiff::tz::TimeZone,
) -> Vec<GroupView> {
    let mut groups: Vec<GroupView> = Vec::new();
    for ((row, state, word, title), intervals) in rows.into_iter().zip(intervals) {
        let since = since_ms(&row, state);
        let strip_label = strip_words(&intervals, now);
        let check = CheckView {
            strip_label,
            state,
            state_word: word,
            for_how_long: duration_text(since, now),
            since_iso: jiff::Timestamp::from_millisecond(since)
                .map_or_else(|_| String::new(), |t| t.to_string()),
            time_iso: jiff::Timestamp::from_millisecond(row.time_ms)
                .map_or_else(|_| String::new(), |t| t.to_string()),
            ago: ago(row.time_ms, now),
            href: check_href(&row.probe, &row.host, &row.check, &[]),
            strip: segment_views(
                &intervals,
                now - STRIP_MS,
                now,
                STRIP_COLUMNS,
                TitleTimes::Clock(tz),
            ),
            probe: row.probe,
            host: row.host,
            check: row.check,
            message: row.message,
        };
        // Rows come ordered by group, so a group is always the last one or a new one.
        match groups.last_mut() {
            Some(g) if g.title == title => g.checks.push(check),
            _ => groups.push(GroupView {
                title,
                checks: vec![check],
            }),
        }
    }
    groups
}

/// A status strip in words, for screen readers and anyone who cannot tell its colours and
/// patterns apart: the share of the last 24 hours in each status, and without data.
fn strip_words(intervals: &[StatusInterval], now: i64) -> String {
    let a = crate::history::availability(intervals, now - STRIP_MS, now, now, &[]);
    let mut parts: Vec<String> = (0u8..4)
        .filter(|s| a.by_status[usize::from(*s)] > 0)
        .map(|s| {
            let share = 100.0 * a.by_status[usize::from(s)] as f64 / STRIP_MS as f64;
            format!("{share:.0} % {}", crate::status_word(s))
        })
        .collect();
    if a.no_data_ms > 0 {
        parts.push(format!(
            "{:.0} % no data",
            100.0 * a.no_data_ms as f64 / STRIP_MS as f64
        ));
    }
    format!("last 24 hours: {}", parts.join(", "))
}

/// What the page's live refresh compares: the fragment changes only when this does (the
/// "ago" texts are kept current by the page's script).
fn fragment_etag(
    plan: &OverviewPlan,
    intervals: &[Vec<StatusInterval>],
    q: &OverviewQuery,
) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (plan.total, plan.shown, plan.page, plan.pages).hash(&mut h);
    for (state, n) in &plan.counts {
        (state, n).hash(&mut h);
    }
    for ((row, state, _, title), intervals) in plan.rows.iter().zip(intervals) {
        (row.id, row.time_ms, &row.message, *state, title).hash(&mut h);
        for i in intervals {
            (i.start_ms, i.end_ms, i.status).hash(&mut h);
        }
    }
    for p in &plan.problems {
        (p.state(), p.since_ms()).hash(&mut h);
        if let Problem::Check { row, .. } = p {
            (row.id, &row.message).hash(&mut h);
        }
    }
    plan.problem_rows.hash(&mut h);
    q.href(&[]).hash(&mut h);
    format!("\"{:016x}\"", h.finish())
}

/// `GET /`: a summary of every check (counts by state, the groups with problems) and one
/// page of checks, problems first; `?fragment=1` returns only the page's table, which the
/// page's script fetches to refresh itself (answered `304` when nothing changed).
pub(crate) async fn overview(
    State(state): State<AppState>,
    Query(q): Query<OverviewQuery>,
    headers: axum::http::HeaderMap,
) -> Result<Response, crate::PageError> {
    let now = crate::now_ms();
    let q = std::sync::Arc::new(q);
    let context = StateContext::of(&state, now);
    let (plan, intervals) = {
        let q = q.clone();
        crate::read(&state, move |store| {
            let plan = plan(store.latest_checks()?, &q, now, &context);
            let ids: Vec<i64> = plan.rows.iter().map(|r| r.0.id).collect();
            let intervals = store.check_intervals(&ids, now - STRIP_MS, now)?;
            Ok((plan, intervals))
        })
        .await?
    };
    let counts = summary_line(&plan);
    let pager = {
        let link = |p: usize| q.href(&[("page", &p.to_string())]);
        PagerView {
            first: if plan.shown == 0 {
                0
            } else {
                (plan.page - 1) * OVERVIEW_PAGE + 1
            },
            last: ((plan.page - 1) * OVERVIEW_PAGE + plan.rows.len()),
            shown: plan.shown,
            page: plan.page,
            pages: plan.pages,
            prev: (plan.page > 1).then(|| link(plan.page - 1)),
            next: (plan.page < plan.pages).then(|| link(plan.page + 1)),
        }
    };
    let render_error = |e: askama::Error| ApiError::Internal(e.to_string());
    let etag = q
        .fragment
        .is_some()
        .then(|| fragment_etag(&plan, &intervals, &q));
    // The table the page shows and its live refresh fetches: one builder for both, run
    // only when the table is sent (not for a refresh answered 304).
    let time_zone = state.time_zone();
    let table_q = q.clone();
    let table = move || ChecksFragment {
        problems: problem_views(&plan.problems, &table_q, now),
        more_problems: plan.problem_rows.saturating_sub(plan.problems.len()),
        all_problems_href: table_q.href(&[("status", "problem"), ("page", "")]),
        filtered: plan.filtered,
        groups: group_views(plan.rows, intervals, now, &time_zone),
        pager,
    };
    if let Some(etag) = etag {
        let unchanged = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == etag);
        let mut response = if unchanged {
            axum::http::StatusCode::NOT_MODIFIED.into_response()
        } else {
            Html(table().render().map_err(render_error)?).into_response()
        };
        if let Ok(v) = HeaderValue::from_str(&counts) {
            response.headers_mut().insert("x-probewatch-summary", v);
        }
        if let Ok(v) = HeaderValue::from_str(&etag) {
            response.headers_mut().insert(header::ETAG, v);
        }
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return Ok(response);
    }
    let by_host = q.group.as_deref() == Some("host");
    let count_links = plan
        .counts
        .iter()
        .map(|(state, n)| CountView {
            state,
            count: *n,
            href: q.href(&[("status", state), ("page", "")]),
        })
        .collect();
    let problem_groups = plan
        .problem_groups
        .iter()
        .take(PROBLEM_GROUPS)
        .map(|(title, problems, checks)| ProblemGroupView {
            href: q.href(&[
                ("in", title),
                ("group", if by_host { "host" } else { "probe" }),
                ("status", "problem"),
                ("page", ""),
            ]),
            title: title.clone(),
            counts: ["critical", "warning", "unknown", "stale", "offline"]
                .iter()
                .filter_map(|s| problems.get(s).map(|n| (*s, *n)))
                .collect(),
            problems: problems.values().sum(),
            checks: *checks,
        })
        .collect();
    let notifications = crate::read(&state, |store| store.notifications(NOTIFICATIONS_SHOWN))
        .await
        .unwrap_or_default();
    let html = OverviewPage {
        failing: failing_receivers(&notifications, now),
        page: "overview",
        q: q.q.as_deref().unwrap_or(""),
        status: q.status.as_deref().unwrap_or(""),
        group: q.group.as_deref().unwrap_or("probe"),
        within: q.within.as_deref().unwrap_or(""),
        status_options: STATUS_OPTIONS,
        counts,
        total: plan.total,
        count_links,
        problem_groups,
        table: table().render().map_err(render_error)?,
    }
    .render()
    .map_err(render_error)?;
    Ok(Html(html).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check_state::state;

    fn row(status: u8, time_ms: i64, interval_ms: Option<i64>) -> CheckRow {
        CheckRow {
            probe: "p".into(),
            host: "h".into(),
            check: "c".into(),
            status,
            time_ms,
            duration_seconds: None,
            message: String::new(),
            interval_ms,
            usual_interval_ms: None,
            id: 1,
            status_since_ms: Some(time_ms),
        }
    }

    #[test]
    fn a_silent_probe_is_stale_not_its_last_status() {
        let now = 1_000_000;
        assert_eq!(state(&row(0, now - 100_000, Some(60_000)), now).0, "ok");
        assert_eq!(state(&row(0, now - 200_000, Some(60_000)), now).0, "stale");
        assert_eq!(state(&row(2, now - 200_000, None), now).0, "critical");
        // Without a declared interval, the learnt one decides.
        let mut learnt = row(2, now - 200_000, None);
        learnt.usual_interval_ms = Some(60_000);
        assert_eq!(state(&learnt, now).0, "stale");
        learnt.usual_interval_ms = Some(120_000);
        assert_eq!(state(&learnt, now).0, "critical");
        assert_eq!(ago(now - 12_000, now), "12 s ago");
        assert_eq!(ago(now - 7_200_000, now), "2 h ago");
    }

    #[test]
    fn problems_are_worst_first_then_newest_and_a_silent_probe_is_one_row() {
        let now = 10_000_000;
        let check = |probe: &str, host: &str, name: &str, status: u8, since: i64, last: i64| {
            let mut r = row(status, last, Some(60_000));
            r.probe = probe.into();
            r.host = host.into();
            r.check = name.into();
            r.status_since_ms = Some(since);
            r
        };
        let rows = vec![
            check("web", "h1", "old-critical", 2, now - 3_600_000, now - 1_000),
            check("web", "h1", "warn", 1, now - 10_000, now - 1_000),
            check("web", "h1", "new-critical", 2, now - 60_000, now - 1_000),
            check("web", "h1", "fine", 0, now - 60_000, now - 1_000),
            // batch on h2: both checks silent for 20 minutes: one row.
            check("batch", "h2", "a", 0, now - 9_000_000, now - 1_200_000),
            check("batch", "h2", "b", 2, now - 9_000_000, now - 1_300_000),
            // cron on h3: one silent check of two stays a row of its own.
            check("cron", "h3", "x", 0, now - 9_000_000, now - 1_500_000),
            check("cron", "h3", "y", 0, now - 60_000, now - 1_000),
        ];
        let plan = plan_pages(
            rows,
            &OverviewQuery::default(),
            now,
            200,
            &Default::default(),
        );
        let got: Vec<String> = plan
            .problems
            .iter()
            .map(|p| match p {
                Problem::Check { row, state, .. } => format!("{state} {}", row.check),
                Problem::Silent {
                    probe,
                    host,
                    checks,
                    last_ms,
                    ..
                } => format!("silent {probe}@{host} x{checks} since {}", now - last_ms),
            })
            .collect();
        assert_eq!(
            got,
            [
                "critical new-critical",
                "critical old-critical",
                "warning warn",
                "silent batch@h2 x2 since 1200000",
                "stale x",
            ]
        );
        assert_eq!(plan.problem_rows, 5);
        assert_eq!(duration_text(now - 3_600_000 - 120_000, now), "1 h 2 min");
    }

    /// 100,000 checks across 1,000 probes: the counts cover every check, paging through
    /// the filtered list visits each check exactly once, problems come first, and a group
    /// filter keeps exactly that group.
    #[test]
    fn a_hundred_thousand_checks_are_counted_and_paged_exactly_once() {
        let now = 10_000_000;
        let rows: Vec<CheckRow> = (0..100_000i64)
            .map(|i| {
                let mut r = row(
                    match i % 97 {
                        0 => 2,
                        1 => 1,
                        _ => 0,
                    },
                    now - 1000,
                    Some(60_000),
                );
                r.id = i;
                r.probe = format!("probe-{:04}", i % 1000);
                r.host = format!("host-{}", i % 37);
                r.check = format!("check-{}", i / 1000);
                r
            })
            .collect();
        let plan_page = |page: usize, filter: &OverviewQuery| {
            let q = OverviewQuery {
                page: Some(page),
                q: filter.q.clone(),
                status: filter.status.clone(),
                group: filter.group.clone(),
                within: filter.within.clone(),
                fragment: None,
            };
            plan(rows.clone(), &q, now, &Default::default())
        };
        let first = plan_page(1, &OverviewQuery::default());
        assert_eq!(first.total, 100_000);
        assert_eq!(first.counts.values().sum::<usize>(), 100_000);
        assert_eq!(first.counts["critical"], 100_000usize.div_ceil(97));
        assert_eq!(first.pages, 100_000usize.div_ceil(OVERVIEW_PAGE));
        assert_eq!(first.rows[0].1, "critical", "problems first");
        // The whole order: every check exactly once, worst group first.
        let all = plan_pages(
            rows.clone(),
            &OverviewQuery::default(),
            now,
            usize::MAX,
            &Default::default(),
        );
        let ids: Vec<i64> = all.rows.iter().map(|r| r.0.id).collect();
        let unique: std::collections::HashSet<i64> = ids.iter().copied().collect();
        assert_eq!((ids.len(), unique.len()), (100_000, 100_000));
        let ranks: Vec<u8> = all.rows.iter().map(|r| severity(r.1)).collect();
        assert_eq!(ranks[0], 0);
        // Pages are consecutive slices of that order: together they visit each check once.
        for page in [1, 2, first.pages / 2, first.pages - 1, first.pages] {
            let p = plan_page(page, &OverviewQuery::default());
            let got: Vec<i64> = p.rows.iter().map(|r| r.0.id).collect();
            let from = (page - 1) * OVERVIEW_PAGE;
            let to = (from + OVERVIEW_PAGE).min(ids.len());
            assert_eq!(got, ids[from..to], "page {page}");
        }
        // Problems only: exactly the non-ok checks, across their pages.
        let problems = OverviewQuery {
            status: Some("problem".into()),
            ..OverviewQuery::default()
        };
        let p = plan_page(1, &problems);
        let expected = 100_000 - first.counts["ok"];
        assert_eq!(p.shown, expected);
        assert!(p.rows.iter().all(|r| r.1 != "ok"));
        // One group.
        let one = OverviewQuery {
            within: Some("probe-0007".into()),
            ..OverviewQuery::default()
        };
        let p = plan_page(1, &one);
        assert_eq!(p.shown, 100);
        assert!(p.rows.iter().all(|r| r.0.probe == "probe-0007"));
        // The groups with problems are listed worst first.
        assert!(!first.problem_groups.is_empty());
        assert!(first.problem_groups[0].1.contains_key("critical"));
    }
}
